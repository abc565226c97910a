"""The MNIST judge: a classifier trained once by the project, shipped as a verified checkpoint.

Lessons 00 and 09 score generated digits with it (see :mod:`tutorlib.metrics`): the accuracy of
generated digits against the labels they were conditioned on, and the Frechet distance in its
128-d penultimate features. The checkpoint ``data/checkpoints/judge_mnist.pt`` was made by
``python scripts/train_judge.py``; its test accuracy, command and sha256 are recorded in
``data/checkpoints/README.md``, and :class:`Judge` refuses a file whose sha256 differs from
:data:`JUDGE_SHA256`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tutorlib.models import MNISTClassifier
from tutorlib.checkpoints import file_sha256, shipped_checkpoint_dir

__all__ = ["JUDGE_FILE", "JUDGE_SHA256", "Judge", "judge_path", "load_judge"]

JUDGE_FILE = "judge_mnist.pt"
# sha256 of the shipped checkpoint (printed by scripts/train_judge.py).
JUDGE_SHA256 = "8fb140993ecc3caadf4e777ffa129a7e1800c9b33b96bd5003e85806a10f48c1"


def judge_path() -> Path:
    """Where the shipped judge checkpoint lives: the repository's ``data/checkpoints``."""
    return shipped_checkpoint_dir() / JUDGE_FILE


class Judge:
    """A frozen :class:`~tutorlib.models.MNISTClassifier` with batched, no-grad scoring helpers.

    Images are ``(N, 1, 28, 28)`` in ``[-1, 1]`` (generated ones are clamped to that range);
    the network follows the images' device.

    Args:
        model: a trained classifier (put in eval mode).
        batch_size: images per forward pass.
        metadata: what the checkpoint says about itself (test accuracy, command...).
    """

    def __init__(self, model: MNISTClassifier, batch_size: int = 1000, metadata: dict[str, Any] | None = None):
        self.model = model.eval().requires_grad_(False)
        self.batch_size = batch_size
        self.metadata = metadata or {}
        self.num_classes = model.head.out_features

    @classmethod
    def load(cls, path: str | Path | None = None, sha256: str | None = JUDGE_SHA256) -> "Judge":
        """Load and verify the judge checkpoint.

        Args:
            path: the checkpoint (default: :func:`judge_path`).
            sha256: expected digest (default: :data:`JUDGE_SHA256`); ``None`` skips the check
                (for checkpoints you trained yourself).

        Raises:
            FileNotFoundError: no checkpoint; the message says how to make one.
            ValueError: the file's sha256 differs from the expected one.
        """
        path = Path(path) if path is not None else judge_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"the MNIST judge checkpoint is missing: {path}. It ships with the course repository; "
                "restore it (git checkout data/checkpoints/judge_mnist.pt) or make one with "
                "`python scripts/train_judge.py` (a few minutes on a CPU) and pass sha256=None."
            )
        if sha256 is not None:
            actual = file_sha256(path)
            if actual != sha256:
                raise ValueError(
                    f"the MNIST judge checkpoint {path} has sha256 {actual}, expected {sha256}: the file is "
                    "corrupt or not the shipped one. Restore it from the repository."
                )
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = MNISTClassifier()
        model.load_state_dict(ckpt["state_dict"])
        return cls(model, metadata=ckpt.get("metadata", {}))

    @torch.no_grad()
    def _map(self, fn, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1:] != (1, 28, 28):
            raise ValueError(f"images must be (N, 1, 28, 28) in [-1, 1], got {tuple(images.shape)}")
        self.model.to(images.device)
        B = self.batch_size
        outs = [fn(images[i:i + B].float().clamp(-1, 1)) for i in range(0, images.shape[0], B)]
        return torch.cat(outs)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, 10)``."""
        return self._map(self.model, images)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted digits ``(N,)`` int64."""
        return self.logits(images).argmax(1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(N, 128)`` (for the Frechet distance)."""
        return self._map(self.model.features, images)


_CACHE: dict[str, Judge] = {}


def load_judge() -> Judge:
    """The shipped, verified judge (loaded once per process)."""
    if "judge" not in _CACHE:
        _CACHE["judge"] = Judge.load()
    return _CACHE["judge"]
