"""MNIST loader: the parser, the cache and the real download path against local HTTP servers."""

import gzip
import http.server
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tutorlib import mnist

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]  # shared/data/mnist README
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SMALL = "t10k-labels-idx1-ubyte.gz"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder, and no mirror set, for each test."""
    monkeypatch.setenv("TUTORLIB_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TUTORLIB_MNIST_MIRROR", raising=False)
    monkeypatch.setattr(mnist, "_CACHE", {})
    return tmp_path / "cache" / "mnist"


class _Server:
    """A loopback HTTP server whose behaviour per request is set by ``mode``."""

    def __init__(self, root: Path, mode: str):
        self.root, self.mode, self.requests = root, mode, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                path = outer.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                if outer.mode == "flaky" and len(outer.requests) == 1:
                    self.send_error(503)
                    return
                body = path.read_bytes()
                if outer.mode == "truncated":
                    body = body[: len(body) // 2]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return f"http://127.0.0.1:{port}/mnist/"


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_read_idx_roundtrip_and_errors(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    assert np.array_equal(mnist.read_idx(tmp_path / "a.gz"), arr)
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc")  # float code, not uint8
    with pytest.raises(ValueError, match="unsigned-byte"):
        mnist.read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(ValueError, match="holds 3 bytes"):
        mnist.read_idx(tmp_path / "short.gz")


def test_load_from_local_mirror_directory(cache, monkeypatch, mnist_source):
    monkeypatch.setenv("TUTORLIB_MNIST_MIRROR", str(mnist_source))
    x, y = mnist.load_mnist("train", progress=False)
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.bincount(y).tolist() == TRAIN_COUNTS
    assert abs(((x + 1) / 2).mean().item() - 0.1307) < 5e-4
    xt, yt = mnist.load_mnist("test", progress=False)
    assert xt.shape[0] == 10000 and torch.bincount(yt).tolist() == TEST_COUNTS
    # Filters: classes, then limit, in file order.
    xs, ys = mnist.load_mnist("test", classes=[0, 7], limit=50, progress=False)
    assert xs.shape == (50, 1, 28, 28) and set(ys.tolist()) <= {0, 7}
    assert torch.equal(xs, xt[(yt == 0) | (yt == 7)][:50])
    assert sorted(p.name for p in cache.iterdir()) == sorted(mnist.FILES)  # no temporary files left


def test_download_over_http(cache, monkeypatch, mnist_source):
    with _Server(mnist_source, "ok") as server:
        monkeypatch.setenv("TUTORLIB_MNIST_MIRROR", server.url)
        x, y = mnist.load_mnist("test", progress=True)
        assert x.shape == (10000, 1, 28, 28) and torch.bincount(y).tolist() == TEST_COUNTS
        n = len(server.requests)
        mnist._CACHE.clear()
        mnist.load_mnist("test", progress=False)  # second load reads the verified cache
        assert len(server.requests) == n == 2
    assert not list(cache.glob("*.part"))


def test_retry_after_a_server_error(cache, monkeypatch, mnist_source):
    with _Server(mnist_source, "flaky") as server:
        monkeypatch.setenv("TUTORLIB_MNIST_MIRROR", server.url)
        path = mnist.ensure_mnist_file(SMALL, progress=False)
        assert len(server.requests) == 2 and mnist._verify(path, SMALL)


def test_truncated_download_is_rejected_and_nothing_is_left(cache, monkeypatch, mnist_source):
    with _Server(mnist_source, "truncated") as server:
        monkeypatch.setenv("TUTORLIB_MNIST_MIRROR", server.url)
        with pytest.raises(mnist.MNISTDownloadError) as err:
            mnist.ensure_mnist_file(SMALL, retries=2, progress=False)
        assert len(server.requests) == 2
    assert "checksum mismatch" in str(err.value) and "TUTORLIB_MNIST_MIRROR" in str(err.value)
    assert not (cache / SMALL).exists() and not list(cache.glob("*.part"))


def test_refused_connection_fails_fast_with_advice(cache, monkeypatch):
    monkeypatch.setattr(mnist, "MIRRORS", (_closed_port_url(), _closed_port_url()))
    start = time.monotonic()
    with pytest.raises(mnist.MNISTDownloadError) as err:
        mnist.load_mnist("test", progress=False)
    assert time.monotonic() - start < 5
    msg = str(err.value)
    assert "TUTORLIB_MNIST_MIRROR" in msg and msg.count("cannot connect") == 2


def test_missing_file_on_mirror_moves_on(cache, monkeypatch, mnist_source, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with _Server(empty, "ok") as bad, _Server(mnist_source, "ok") as good:
        monkeypatch.setattr(mnist, "MIRRORS", (bad.url, good.url))
        assert mnist._verify(mnist.ensure_mnist_file(SMALL, progress=False), SMALL)
        assert len(bad.requests) == 1 and len(good.requests) == 1


def test_corrupted_cache_is_fetched_again(cache, monkeypatch, mnist_source):
    monkeypatch.setenv("TUTORLIB_MNIST_MIRROR", str(mnist_source))
    path = mnist.ensure_mnist_file(SMALL, progress=False)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 3])  # truncated
    assert not mnist._verify(path, SMALL)
    assert mnist.ensure_mnist_file(SMALL, progress=False) == path and path.read_bytes() == good
    # Valid gzip, wrong contents: caught by the checksum of the decompressed bytes.
    with gzip.open(path, "wb") as f:
        f.write(b"\x00" * 10008)
    mnist.ensure_mnist_file(SMALL, progress=False)
    assert mnist._verify(path, SMALL)


def test_bad_mirror_directory_and_bad_arguments(cache, monkeypatch, tmp_path):
    monkeypatch.setenv("TUTORLIB_MNIST_MIRROR", str(tmp_path / "nowhere"))
    with pytest.raises(mnist.MNISTDownloadError, match="neither an http"):
        mnist.ensure_mnist_file(SMALL, progress=False)
    with pytest.raises(ValueError, match="split"):
        mnist.load_mnist("validation")
    with pytest.raises(ValueError, match="unknown MNIST file"):
        mnist.ensure_mnist_file("cifar.gz")


def test_data_dir_override(monkeypatch, tmp_path):
    monkeypatch.setenv("TUTORLIB_DATA_DIR", str(tmp_path))
    assert mnist.mnist_dir() == tmp_path / "mnist"
    monkeypatch.delenv("TUTORLIB_DATA_DIR")
    from tutorlib.files import data_dir

    assert data_dir().name == "data"


class _BadServer:
    """A loopback server that accepts and then stalls, or drips one byte every ``drip_s`` seconds."""

    def __init__(self, mode: str, drip_s: float = 0.5):
        outer = self
        self.mode = mode

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if outer.mode == "stall":
                    time.sleep(30)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                for _ in range(200):
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(drip_s)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_stalling_mirror_costs_one_timeout_not_retries(cache, monkeypatch):
    with _BadServer("stall") as srv:
        monkeypatch.setenv("TUTORLIB_MNIST_MIRROR", srv.url)
        start = time.perf_counter()
        with pytest.raises(mnist.MNISTDownloadError, match="sent nothing for 1 s") as err:
            mnist.ensure_mnist_file("t10k-labels-idx1-ubyte.gz", timeout=1.0, progress=False)
        assert time.perf_counter() - start < 4
    assert srv.url + "t10k-labels-idx1-ubyte.gz" in str(err.value)  # the full URL
    assert not list(cache.glob("*.part")), "a temporary file was left behind"


def test_a_dripping_mirror_is_given_up_on(cache, monkeypatch):
    with _BadServer("drip", drip_s=0.2) as srv:
        monkeypatch.setenv("TUTORLIB_MNIST_MIRROR", srv.url)
        start = time.perf_counter()
        with pytest.raises(mnist.MNISTDownloadError, match="too slow"):
            mnist.ensure_mnist_file("t10k-labels-idx1-ubyte.gz", timeout=1.0, grace_s=1.0, progress=False)
        assert time.perf_counter() - start < 5
        with pytest.raises(mnist.MNISTDownloadError, match="deadline"):
            mnist.ensure_mnist_file("t10k-labels-idx1-ubyte.gz", timeout=1.0, grace_s=100, min_rate=0.0,
                                    deadline_s=1.0, progress=False)
    assert not list(cache.glob("*.part"))


def test_a_404_names_the_full_url(cache, monkeypatch, tmp_path):
    (tmp_path / "empty").mkdir()
    with _Server(tmp_path / "empty", "ok") as srv:
        monkeypatch.setenv("TUTORLIB_MNIST_MIRROR", srv.url)
        with pytest.raises(mnist.MNISTDownloadError, match=r"/mnist/t10k-labels-idx1-ubyte\.gz: HTTP 404"):
            mnist.ensure_mnist_file("t10k-labels-idx1-ubyte.gz", progress=False)


def test_stale_part_files_of_killed_downloads_are_swept(cache, monkeypatch, mnist_source):
    import subprocess
    import sys

    cache.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = cache / f".t10k-labels-idx1-ubyte.gz.{dead.pid}.abc.part"
    stale.write_bytes(b"half a download")
    mine = cache / f".t10k-labels-idx1-ubyte.gz.{__import__('os').getpid()}.live.part"
    mine.write_bytes(b"a download in progress")
    monkeypatch.setenv("TUTORLIB_MNIST_MIRROR", str(mnist_source))
    mnist.ensure_mnist_file("t10k-labels-idx1-ubyte.gz", progress=False)
    assert not stale.exists() and mine.exists()


def test_a_data_dir_that_is_a_file_says_so(monkeypatch, tmp_path):
    f = tmp_path / "not-a-folder"
    f.write_text("x")
    monkeypatch.setenv("TUTORLIB_DATA_DIR", str(f))
    with pytest.raises(NotADirectoryError, match="TUTORLIB_DATA_DIR=.*is a file"):
        mnist.load_mnist("test", limit=1)
