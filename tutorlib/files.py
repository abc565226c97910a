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

__all__ = ["atomic_write", "check_folder", "data_dir", "file_sha256", "sweep_temporaries", "temp_name"]


def data_dir() -> Path:
    """The cache root: ``$TUTORLIB_DATA_DIR``, else the repository's ``data/`` folder.

    When tutorlib is installed outside a checkout (no ``pyproject.toml`` beside the package),
    the default is ``~/.cache/tutorlib``.
    """
    env = os.environ.get("TUTORLIB_DATA_DIR", "").strip()
    if env:
        folder = Path(env).expanduser()
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"TUTORLIB_DATA_DIR={env!r} is a file, not a folder: point it at a folder for "
                                     "the course's data cache (it is created if missing), or unset it")
        return folder
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


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:
        return True
    return True


def temp_name(path: Path, suffix: str = ".tmp") -> str:
    """The prefix of this process's temporary files for ``path``: ``.<name>.<pid>.`` (see :func:`sweep_temporaries`)."""
    return f".{path.name}.{os.getpid()}."


def sweep_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporary files left for ``path`` by writers that no longer run (a killed download or save).

    Temporary files are named ``.<name>.<pid>.<random><suffix>`` next to their target; one whose process
    has ended is left over from a crash and is removed (a live writer's file is kept).

    Returns:
        The files removed.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = f".{path.name}."
    for stale in path.parent.glob(f"{prefix}*"):
        parts = stale.name[len(prefix):].split(".", 1)
        if not parts[0].isdigit() or not stale.name.endswith((".tmp", ".part")):
            continue
        if not _pid_alive(int(parts[0])):
            try:
                stale.unlink()
                removed.append(stale)
            except OSError:
                pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Write ``path`` through ``write(binary_file)`` atomically: temporary file, fsync, ``os.replace``.

    Either the old file or the complete new one exists at every moment; the temporary file is
    removed when ``write`` raises, and temporaries left by killed writers are swept first.
    """
    path = Path(path)
    check_folder(path.parent)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_name(path), suffix=".tmp", dir=path.parent)
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


def check_folder(folder: Path, what: str = "a folder") -> Path:
    """``folder`` if it is a directory or does not exist yet; a clear error when a file stands in its way."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() and not candidate.is_dir():
            hint = " (TUTORLIB_DATA_DIR points at it)" if os.environ.get("TUTORLIB_DATA_DIR", "").strip() and \
                Path(os.environ["TUTORLIB_DATA_DIR"]).expanduser() == candidate else ""
            raise NotADirectoryError(f"{candidate} is a file, but the course needs {what} there{hint}: move the file "
                                     "away or point TUTORLIB_DATA_DIR at a folder")
        if candidate.exists():
            break
    return folder
