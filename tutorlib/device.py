"""Device choice, seeding and run-size profiles (lesson 00).

Every lesson calls these three once, in its setup cell::

    device = get_device()          # cuda, then mps, then cpu (TUTORLIB_DEVICE overrides)
    gen = seed_everything(0)       # seeds python, numpy, torch; returns a torch.Generator
    P = profile()                  # sizes for this run (TUTORLIB_PROFILE: smoke|standard|full)

Library code never picks a device or reseeds: it reads the device from its input tensors and
takes ``generator=`` arguments (see STYLE, items 5 and 6).
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
    "set_threads",
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


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op CPU threads (``TUTORLIB_THREADS`` or all cores by default).

    On small machines two busy processes with two threads each run far slower than one
    thread each; tests and benchmarks call this deliberately.

    Returns:
        The number of threads now in use.
    """
    if n is None:
        env = os.environ.get("TUTORLIB_THREADS", "").strip()
        n = int(env) if env else (os.cpu_count() or 1)
    if n < 1:
        raise ValueError(f"the number of threads must be at least 1, got {n}")
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
