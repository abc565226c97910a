# The course's commands:  `make course`, `make test`, `make verify` and `make lab`.
# Each creates (or reuses) a virtual environment in .venv, installs what it needs, and is
# idempotent: a second run with nothing changed skips the install and the cached work.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tutorlib-installed
export TUTORLIB_PROFILE ?= standard
# Sleeping, not spinning, OpenMP threads: all cores stay fast when a browser competes for one
# (bench/bench_threads.py; tutorlib.device.default_threads). Read when torch is imported.
export OMP_WAIT_POLICY ?= PASSIVE
# `make test` spreads the tests over this many pytest-xdist workers (one torch thread each; the book build
# and the browser checks stay together on one worker); TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= auto

.PHONY: course test test-lessons verify lab book serve-book install clean help

help:
	@echo "make course   install, run every lesson ($$TUTORLIB_PROFILE, default standard) and build the book"
	@echo "make test     install and run every test (library; every lesson in the smoke profile, in the book)"
	@echo "make test-lessons  every lesson under nbmake (smoke profile, live widgets)"
	@echo "make verify   run every lesson in the smoke and standard profiles, check its claims, record its time"
	@echo "make lab      open the lessons in JupyterLab (.py lessons open as notebooks)"
	@echo "make serve-book  serve the built book on port $(BOOK_PORT), e.g. to a classroom"

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 is needed, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[lab,test,book]"
	$(PY) scripts/lab_settings.py
	@touch $(STAMP)

install: $(STAMP)

# The tests run every lesson in the smoke profile (the default above is for `make course`).
test: export TUTORLIB_PROFILE = smoke
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Each lesson as a notebook under nbmake, with live widgets (the book renders them static).
test-lessons: export TUTORLIB_PROFILE = smoke
test-lessons: $(STAMP)
	$(PY) -m pytest --nbmake --nbmake-timeout=600 lessons $(PYTEST_ARGS)

# The claims command: every lesson top to bottom, strict, in each profile; writes lessons/claims.json
# and the lessons' run-time lines. VERIFY_ARGS="--lessons 03 09" runs some lessons only.
VERIFY_PROFILES ?= smoke standard
verify: $(STAMP)
	$(PY) scripts/verify_lessons.py --profiles $(VERIFY_PROFILES) $(VERIFY_ARGS)

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

# JupyterLab refuses to run as root (containers, classroom images) unless told: say so and allow it.
LAB_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
lab: $(STAMP)
	@[ -z "$(LAB_ROOT)" ] || echo "make lab: running as root, so JupyterLab gets --allow-root"
	$(VENV)/bin/jupyter lab $(LAB_ROOT) lessons/

clean:
	rm -rf book/_build book/_generated book/lessons build .pytest_cache
