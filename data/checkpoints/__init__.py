"""The checkpoints the course ships, installed as the package data ``tutorlib.shipped``.

This folder is mapped to the subpackage ``tutorlib.shipped`` (``pyproject.toml``, ``[tool.setuptools]``),
so that a plain ``pip install .`` carries the files into ``site-packages`` and
:func:`tutorlib.checkpoints.shipped_checkpoint_dir` finds them through ``importlib.resources`` in a
checkout and in an installed wheel alike. See README.md here for how each file was made.
"""
