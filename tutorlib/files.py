"""Files on disk: the data cache folder, sha256 digests and atomic writes (layer 1).

Downloads (:mod:`tutorlib.mnist`) and checkpoints (:mod:`tutorlib.checkpoints`) share these, so that
nothing the course writes can be left half-written: a file is written to a temporary name in its
folder, flushed to disk and then renamed over the target in one step (``os.replace``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "data_dir", "file_sha256"]


def data_dir() -> Path:
    """The cache root: ``$TUTORLIB_DATA_DIR``, else the repository's ``data/`` folder.

    When tutorlib is installed outside a checkout (no ``pyproject.toml`` beside the package),
    the default is ``~/.cache/tutorlib``.
    """
    env = os.environ.get("TUTORLIB_DATA_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file():
        return repo / "data"
    return Path.home() / ".cache" / "tutorlib"


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Write ``path`` through ``write(binary_file)`` atomically: temporary file, fsync, ``os.replace``.

    Either the old file or the complete new one exists at every moment; the temporary file is
    removed when ``write`` raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
