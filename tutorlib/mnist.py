"""MNIST: download, cache, verify and parse the four standard IDX files (lesson 00).

No torchvision: the IDX format is a few lines of ``struct``. Files are cached under
``$TUTORLIB_DATA_DIR/mnist`` (default: the repository's ``data/`` folder). A missing file is
downloaded from the usual public mirrors, with a progress bar, retries and an atomic write;
every file is checked against the sha256 of its *decompressed* contents, so a truncated or
corrupted cache file is detected and fetched again.

``TUTORLIB_MNIST_MIRROR`` points at a classroom or offline copy: either a base URL
(``http://host:port/mnist/``) or a local directory holding the four ``.gz`` files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tutorlib.files import check_folder, data_dir, sweep_temporaries, temp_name

__all__ = ["FILES", "MIRRORS", "MNISTDownloadError", "ensure_mnist_file", "load_mnist", "mnist_dir", "read_idx"]

# sha256 and size of the decompressed contents of each file (the gzip wrappers vary by mirror).
FILES: dict[str, tuple[str, int]] = {
    "train-images-idx3-ubyte.gz": ("ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
    "train-labels-idx1-ubyte.gz": ("65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
    "t10k-images-idx3-ubyte.gz": ("0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
    "t10k-labels-idx1-ubyte.gz": ("ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008),
}

SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# The usual public mirrors, tried in order.
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

_HINT = (
    "Set TUTORLIB_MNIST_MIRROR to a base URL that serves the four MNIST .gz files, or to a local "
    "directory that holds them (for example a copy made on a machine with internet), then run again."
)


class MNISTDownloadError(RuntimeError):
    """MNIST could not be obtained from any source; the message says what to set."""


def mnist_dir() -> Path:
    """Where the MNIST ``.gz`` files are cached."""
    return data_dir() / "mnist"


def _decompressed_digest(path: Path) -> tuple[str, int] | None:
    """sha256 and size of a gzip file's contents, or None when it is not a complete gzip file."""
    h = hashlib.sha256()
    size = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except (OSError, EOFError, zlib.error):
        return None
    return h.hexdigest(), size


def _verify(path: Path, name: str) -> bool:
    return path.is_file() and _decompressed_digest(path) == FILES[name]


def _mirror_sources() -> list[str]:
    env = os.environ.get("TUTORLIB_MNIST_MIRROR", "").strip()
    return [env] if env else list(MIRRORS)


class _TooSlow(OSError):
    """A download that stalls, drips or overruns its deadline (not worth retrying on the same mirror)."""


def _fetch_url(url: str, dest: Path, *, timeout: float, deadline_s: float, min_rate: float, grace_s: float,
               progress: bool) -> None:
    """Stream ``url`` into ``dest`` (already a temporary path), with a progress bar, within bounds.

    Each read waits at most ``timeout`` seconds; the whole file must arrive within ``deadline_s``; and
    after ``grace_s`` seconds the average rate must stay above ``min_rate`` bytes per second (a server
    that drips a byte now and then is given up on, not waited for forever).
    """
    req = urllib.request.Request(url, headers={"User-Agent": "tutorlib (course data loader)"})
    start = time.monotonic()
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except TimeoutError as err:  # connected, but no answer: a stalled server
        raise _TooSlow(f"{url} accepted the connection but sent nothing for {timeout:g} s") from err
    with resp, open(dest, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=Path(urllib.parse.urlparse(url).path).name, leave=False)
        received = 0
        try:
            while chunk := resp.read1(1 << 16):  # returns what has arrived, so the bounds below are checked
                out.write(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
                elapsed = time.monotonic() - start
                if elapsed > deadline_s:
                    raise _TooSlow(f"{url} did not finish within the {deadline_s:g} s deadline ({received} bytes)")
                if elapsed > grace_s and received / elapsed < min_rate:
                    raise _TooSlow(f"{url} is too slow: {received / elapsed:.0f} bytes/s after {elapsed:.0f} s "
                                   f"(at least {min_rate:.0f} expected)")
        except TimeoutError as err:
            raise _TooSlow(f"{url} stalled: nothing arrived for {timeout:g} s ({received} bytes so far)") from err
        finally:
            if bar is not None:
                bar.close()


def _copy_from(source: str, name: str, dest: Path, **bounds) -> None:
    """Copy ``name`` from a mirror (URL or local directory) into ``dest``."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme in ("http", "https", "ftp"):
        _fetch_url(source.rstrip("/") + "/" + name, dest, **bounds)
        return
    folder = Path(parsed.path if parsed.scheme == "file" else source).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"TUTORLIB_MNIST_MIRROR={source!r} is neither an http(s) URL nor an existing directory")
    src = folder / name
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist (the mirror directory must hold {name})")
    shutil.copyfile(src, dest)


@dataclass
class _Attempt:
    source: str
    error: str


def ensure_mnist_file(name: str, *, retries: int = 3, timeout: float = 5.0, deadline_s: float | None = None,
                      min_rate: float = 10_000.0, grace_s: float = 15.0, progress: bool = True) -> Path:
    """Return the path of a verified cached MNIST file, downloading it when needed.

    A cached file whose decompressed sha256 does not match is fetched again. Downloads go
    to a temporary file in the cache folder and replace the target only once verified; temporary
    files left by a download that was killed are removed first.

    Args:
        name: one of :data:`FILES`.
        retries: attempts per mirror for errors that may pass (resets, truncated files, server
            errors). A refused connection, an unknown host, a missing file (HTTP 4xx) or a mirror that
            stalls or drips moves straight to the next mirror, so an offline machine gets its answer
            in seconds and a bad mirror costs at most ``timeout`` (or ``grace_s``) seconds.
        timeout: seconds for the connection and for each read.
        deadline_s: seconds for the whole file (default ``TUTORLIB_DOWNLOAD_DEADLINE``, else 300).
        min_rate: bytes per second a download must average once ``grace_s`` seconds have passed.
        grace_s: seconds before the rate is judged.
        progress: show a tqdm progress bar.

    Raises:
        MNISTDownloadError: no source gave a file with the right checksum; the message lists
            every attempt (with the full URL) and what to set.
    """
    if name not in FILES:
        raise ValueError(f"unknown MNIST file {name!r}; expected one of {sorted(FILES)}")
    if deadline_s is None:
        env = os.environ.get("TUTORLIB_DOWNLOAD_DEADLINE", "").strip()
        try:
            deadline_s = float(env) if env else 300.0
        except ValueError:
            raise ValueError(f"TUTORLIB_DOWNLOAD_DEADLINE={env!r} is not a number of seconds") from None
    folder = check_folder(mnist_dir(), "a folder for the MNIST files")
    target = folder / name
    if _verify(target, name):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(target)
    if target.exists():
        print(f"tutorlib: cached {target} is corrupted or truncated; fetching it again.")
    bounds = dict(timeout=timeout, deadline_s=deadline_s, min_rate=min_rate, grace_s=grace_s, progress=progress)
    attempts: list[_Attempt] = []
    for source in _mirror_sources():
        where = source.rstrip("/") + "/" + name if "://" in source else source
        for attempt in range(retries):
            fd, tmp_name = tempfile.mkstemp(prefix=temp_name(target), suffix=".part", dir=folder)
            os.close(fd)
            tmp = Path(tmp_name)
            try:
                _copy_from(source, name, tmp, **bounds)
                digest = _decompressed_digest(tmp)
                if digest != FILES[name]:
                    got = "not a complete gzip file" if digest is None else f"sha256 {digest[0][:12]}..., {digest[1]} bytes"
                    raise ValueError(f"checksum mismatch ({got})")
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, target)
                return target
            except urllib.error.HTTPError as err:
                attempts.append(_Attempt(where, f"HTTP {err.code} {err.reason}"))
                if 400 <= err.code < 500:
                    break  # the file is not there; retrying will not help
            except urllib.error.URLError as err:
                reason = err.reason
                if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                    attempts.append(_Attempt(where, f"no answer within {timeout:g} s"))
                else:
                    attempts.append(_Attempt(where, f"cannot connect ({reason})"))
                break  # unknown host, refused or silent: try the next source
            except _TooSlow as err:
                attempts.append(_Attempt(where, str(err)))
                break  # a stalling or dripping mirror will not get better on a retry
            except FileNotFoundError as err:
                attempts.append(_Attempt(where, str(err)))
                break
            except (OSError, ValueError) as err:  # resets, short reads, bad checksums
                attempts.append(_Attempt(where, f"{type(err).__name__}: {err}"))
            finally:
                tmp.unlink(missing_ok=True)
            if attempt + 1 < retries:
                time.sleep(0.5 * 2**attempt)
    tried = "\n".join(f"  - {a.source}: {a.error}" for a in attempts)
    raise MNISTDownloadError(f"could not obtain {name} for MNIST. Tried:\n{tried}\n{_HINT}")


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzip-compressed IDX file (the MNIST format) into a uint8 array.

    The header is a magic number ``0x00 0x00 0x08 ndim`` (0x08 = unsigned byte) followed by
    ``ndim`` big-endian uint32 sizes; the data follows in C order.
    """
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()})")
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says {shape} ({expected} bytes) but holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def load_mnist(
    split: str = "train",
    *,
    limit: int | None = None,
    classes: list[int] | tuple[int, ...] | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST as tensors, downloading and verifying the files on first use.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        limit: keep only the first ``limit`` images (after the class filter), in file order.
        classes: keep only these digits (e.g. ``[0, 1]``).
        device: where to put the tensors.
        progress: show a progress bar while downloading.

    Returns:
        ``(images, labels)``: images ``(N, 1, 28, 28)`` float32 scaled to ``[-1, 1]``
        (``x / 127.5 - 1``) and labels ``(N,)`` int64.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or a non-negative int, got {limit!r}")
    key = f"{mnist_dir()}::{split}"
    if key not in _CACHE:
        img_name, lab_name = SPLITS[split]
        images = read_idx(ensure_mnist_file(img_name, progress=progress))  # (N, 28, 28) uint8
        labels = read_idx(ensure_mnist_file(lab_name, progress=progress))  # (N,) uint8
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise ValueError(f"MNIST {split}: images {images.shape} and labels {labels.shape} do not match")
        _CACHE[key] = (torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))
    images_u8, labels = _CACHE[key]
    if classes is not None:
        wanted = torch.as_tensor(list(classes), dtype=torch.int64)
        if wanted.numel() == 0 or wanted.min() < 0 or wanted.max() > 9:
            raise ValueError(f"classes must be digits in 0..9, got {list(classes)!r}")
        keep = torch.isin(labels, wanted)
        images_u8, labels = images_u8[keep], labels[keep]
    if limit is not None:
        images_u8, labels = images_u8[:limit], labels[:limit]
    x = images_u8.to(device=device, dtype=torch.float32).unsqueeze(1) / 127.5 - 1.0  # (N, 1, 28, 28)
    return x, labels.to(device)
