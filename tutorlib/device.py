"""Device choice, seeding and run-size profiles (lesson 00).

Every lesson calls these once, in its setup cell::

    device = get_device()          # cuda, then mps, then cpu (TUTORLIB_DEVICE overrides)
    threads = set_threads()        # CPU threads that survive a busy laptop (TUTORLIB_THREADS overrides)
    gen = seed_everything(0)       # seeds python, numpy, torch; returns a torch.Generator
    P = profile()                  # sizes for this run (TUTORLIB_PROFILE: smoke|standard|full)

Library code never picks a device or reseeds: it reads the device from its input tensors and
takes ``generator=`` arguments (CONTRIBUTING.md, "Conventions of the library").
"""

from __future__ import annotations

import dataclasses
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "PROFILES",
    "Profile",
    "get_device",
    "profile",
    "seed_everything",
    "default_threads",
    "fast_sampling_dtype",
    "set_threads",
    "SAMPLING_PRECISIONS",
]


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def get_device(name: str | None = None) -> torch.device:
    """Pick the device a lesson runs on.

    Order of preference: ``name`` if given, else the ``TUTORLIB_DEVICE`` environment variable,
    else CUDA when available, then Apple's MPS, then the CPU.

    Args:
        name: a torch device string such as ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"``.

    Returns:
        The chosen ``torch.device``.

    Raises:
        ValueError: the requested device string is not a device torch knows.
        RuntimeError: the requested device exists in torch but not on this machine.
    """
    requested = name if name is not None else os.environ.get("TUTORLIB_DEVICE", "").strip()
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as err:
            raise ValueError(
                f"TUTORLIB_DEVICE={requested!r} is not a device torch understands; "
                "use 'cpu', 'cuda', 'cuda:N' or 'mps' (or unset it to choose automatically)."
            ) from err
        if device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(
                f"TUTORLIB_DEVICE={requested!r} is a {device.type!r} device, which the course cannot train or "
                "sample on; use 'cpu', 'cuda', 'cuda:N' or 'mps' (or unset it to choose automatically)."
            )
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device {requested!r} was requested but torch sees no CUDA GPU here "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}). "
                "Install a CUDA build of torch, or unset TUTORLIB_DEVICE to run on the CPU."
            )
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {requested!r} was requested but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible."
            )
        if device.type == "mps" and not _mps_available():
            raise RuntimeError(
                "device 'mps' was requested but Apple's MPS backend is not available here; "
                "unset TUTORLIB_DEVICE to run on the CPU."
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators (all devices).

    Call it once per lesson, in the setup cell. Library functions never reseed.

    Args:
        seed: a non-negative integer.

    Returns:
        A CPU ``torch.Generator`` seeded with ``seed``, for the ``generator=`` arguments of
        tutorlib's samplers.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice at import: the physical cores it may use
MAX_THREADS = 4 * (os.cpu_count() or 1)  # more than this is a typo (a huge count can crash OpenMP)


SAMPLING_PRECISIONS = ("float32", "bfloat16", "auto")  # what TUTORLIB_SAMPLING_PRECISION and precision= accept


def _cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (x86 AVX512-BF16 or AMX; read on Linux).

    Without these instructions torch emulates bfloat16 and runs slower than float32, so "auto" stays at
    float32 there, and wherever the flags cannot be read (macOS, Windows).
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def fast_sampling_dtype(device: torch.device | str, precision: str | None = None) -> torch.dtype | None:
    """The reduced precision to *sample* in on ``device``: ``torch.bfloat16``, or ``None`` for float32.

    Sampling runs a trained network dozens of times; in bfloat16 (through ``torch.autocast``, see
    :func:`tutorlib.solvers.reduced_precision`) its matrix products and convolutions cost about half, at
    no measured cost in quality (``bench/bench_sampling.py``: 2D energy distance and MNIST judge accuracy
    and Fréchet distance unchanged within their noise). Training stays in float32.

    Args:
        device: where the network runs.
        precision: ``"float32"`` (never reduce), ``"bfloat16"`` (always), ``"auto"`` (bfloat16 where the
            hardware is fast at it: a CUDA GPU that supports it, a CPU with AVX512-BF16 or AMX; float32
            elsewhere, e.g. on MPS or a CPU that would emulate it); ``None`` reads
            ``TUTORLIB_SAMPLING_PRECISION`` (default ``"float32"``).

    Raises:
        ValueError: an unknown precision.
    """
    name = precision if precision is not None else (os.environ.get("TUTORLIB_SAMPLING_PRECISION", "").strip()
                                                    or "float32")
    if name not in SAMPLING_PRECISIONS:
        source = "precision" if precision is not None else "TUTORLIB_SAMPLING_PRECISION"
        raise ValueError(f"{source}={name!r} is not a sampling precision: use one of {', '.join(SAMPLING_PRECISIONS)}")
    if name == "float32":
        return None
    if name == "bfloat16":
        return torch.bfloat16
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if kind == "cpu":
        return torch.bfloat16 if _cpu_has_fast_bfloat16() else None
    return None


def _threads_from_env() -> int | None:
    value = os.environ.get("TUTORLIB_THREADS", "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"TUTORLIB_THREADS={value!r} is not a whole number: set it to the number of CPU threads "
                         f"torch may use, from 1 to {MAX_THREADS} (or unset it for the default)") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"TUTORLIB_THREADS={value!r} is out of range: use 1 to {MAX_THREADS} "
                         f"(this machine has {os.cpu_count()} logical CPUs), or unset it for the default")
    return n


def default_threads() -> int:
    """The thread count :func:`set_threads` picks when neither an argument nor ``TUTORLIB_THREADS`` says.

    Measured by ``bench/bench_threads.py`` (results in ``bench/micro/threads.json``): on a 2-core CPU with
    one competing busy process, two torch threads with OpenMP's default wait policy ran 3-4 times slower
    than one, because each parallel region waits for a thread the other process has descheduled. With
    ``OMP_WAIT_POLICY=PASSIVE`` (set before torch is imported; ``make`` does) waiting threads sleep
    instead of spinning, and all cores degrade gracefully (at most 2x under that load). So: torch's own
    default (its physical cores) under a passive policy, else one core fewer, which leaves a core for
    the browser or whatever else runs.
    """
    if os.environ.get("OMP_WAIT_POLICY", "").strip().upper() == "PASSIVE":
        return _TORCH_DEFAULT_THREADS
    return max(1, _TORCH_DEFAULT_THREADS - 1)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op CPU threads: ``n``, else ``TUTORLIB_THREADS``, else :func:`default_threads`.

    Every lesson calls it once in its setup cell; tests and benchmarks set ``TUTORLIB_THREADS``.

    Returns:
        The number of threads now in use.

    Raises:
        ValueError: ``n`` or ``TUTORLIB_THREADS`` is not a whole number from 1 to :data:`MAX_THREADS`.
    """
    if n is None:
        n = _threads_from_env()
    if n is None:
        n = default_threads()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"the number of threads must be a whole number from 1 to {MAX_THREADS}, got {n!r}")
    torch.set_num_threads(n)
    return torch.get_num_threads()


@dataclass(frozen=True)
class Profile:
    """Run sizes for one profile. Lessons, recipes and model constructors read sizes from here and
    nowhere else (``TimeMLP.from_profile``, ``TrainConfig.from_profile``, ``MNISTRecipe.from_profile``).

    The same code runs in every profile; only these numbers change. Training lengths are step
    counts, never time budgets, so one seed gives one model on every machine.
    """

    name: str  # "smoke", "standard" or "full"
    # --- 2D toy problems ---
    steps_2d: int  # optimiser steps for a 2D model
    batch_2d: int  # training batch size for 2D models
    hidden_2d: int  # width of the 2D MLP's hidden layers
    depth_2d: int  # number of hidden layers of the 2D MLP
    n_eval_2d: int  # samples drawn for 2D metrics and plots
    # --- MNIST ---
    mnist_limit: int | None  # training images used (None = all 60,000)
    steps_mnist: int  # optimiser steps of an MNIST model (the MNIST recipe, lessons 01 and 09)
    batch_mnist: int  # training batch size for MNIST models
    unet_channels: int  # base channel count of the MNIST U-Nets (PatchUNet, UNet)
    n_eval_mnist: int  # generated images used for MNIST metrics

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed (for exercises and experiments)."""
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", steps_2d=60, batch_2d=256, hidden_2d=64, depth_2d=2, n_eval_2d=500,
        mnist_limit=1000, steps_mnist=30, batch_mnist=32, unet_channels=8, n_eval_mnist=100,
    ),
    "standard": Profile(
        name="standard", steps_2d=3000, batch_2d=512, hidden_2d=128, depth_2d=3, n_eval_2d=2000,
        mnist_limit=None, steps_mnist=3000, batch_mnist=128, unet_channels=32, n_eval_mnist=1000,
    ),
    "full": Profile(
        name="full", steps_2d=20000, batch_2d=1024, hidden_2d=256, depth_2d=4, n_eval_2d=5000,
        mnist_limit=None, steps_mnist=20000, batch_mnist=256, unet_channels=64, n_eval_mnist=10000,
    ),
}


def profile(name: str | None = None) -> Profile:
    """The run-size profile: ``name``, else ``TUTORLIB_PROFILE``, else ``"standard"``.

    Raises:
        ValueError: the name is not one of ``smoke``, ``standard``, ``full``.
    """
    chosen = name if name is not None else os.environ.get("TUTORLIB_PROFILE", "").strip() or "standard"
    key = chosen.strip().lower()
    if key not in PROFILES:
        valid = ", ".join(PROFILES)
        raise ValueError(
            f"unknown profile {chosen!r} (from {'the argument' if name is not None else 'TUTORLIB_PROFILE'}); "
            f"valid profiles are: {valid}."
        )
    return PROFILES[key]
