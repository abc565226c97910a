# The course's two commands:  `make course`  and  `make test`.
# Both create (or reuse) a virtual environment in .venv, install what they need, and are
# idempotent: a second run with nothing changed skips the install and the cached work.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tutorlib-installed
export TUTORLIB_PROFILE ?= standard

.PHONY: course test lab book serve-book install clean help

help:
	@echo "make course   install, run every lesson ($$TUTORLIB_PROFILE, default standard) and build the book"
	@echo "make test     install and run every test (library, lessons in the smoke profile, book)"
	@echo "make lab      open the lessons in JupyterLab (.py lessons open as notebooks)"
	@echo "make serve-book  serve the built book on port $(BOOK_PORT), e.g. to a classroom"

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is needed, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[test,book]"
	@touch $(STAMP)

install: $(STAMP)

# The tests run every lesson in the smoke profile (the default above is for `make course`).
test: export TUTORLIB_PROFILE = smoke
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

book: $(STAMP)
	$(PY) book/course.py build-book

# The book needs no internet: serve it to a classroom from the instructor's machine.
BOOK_PORT ?= 8000
BOOK_HTML := build/book-$(TUTORLIB_PROFILE)/_build/html
serve-book: $(STAMP)
	@test -f $(BOOK_HTML)/index.html || $(PY) book/course.py build-book
	$(PY) -m http.server $(BOOK_PORT) --directory $(BOOK_HTML)

course: $(STAMP)
	$(PY) book/course.py all

lab: $(STAMP)
	$(VENV)/bin/jupyter lab lessons/

clean:
	rm -rf book/_build book/_generated book/lessons build .pytest_cache
