"""The MNIST judge: a classifier trained once by the project, shipped as a verified checkpoint.

Lessons 00, 01 and 09 score generated digits with it, by the functions at the end of this module:
:func:`judge_accuracy` (generated digits against the labels they were conditioned on),
:func:`frechet_distance` in its 128-d penultimate features, :func:`label_entropy` (mode coverage) and
:func:`feature_spread` (within-class diversity). The checkpoint ``data/checkpoints/judge_mnist.pt`` was made by
``python scripts/train_judge.py``; its test accuracy, command and sha256 are recorded in
``data/checkpoints/README.md``, and :class:`Judge` refuses a file whose sha256 differs from
:data:`JUDGE_SHA256`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tutorlib.checkpoints import shipped_checkpoint_dir
from tutorlib.files import file_sha256
from tutorlib.metrics import frechet_distance_features
from tutorlib.models import MNISTClassifier

__all__ = [
    "JUDGE_FILE",
    "JUDGE_SHA256",
    "Judge",
    "feature_spread",
    "frechet_distance",
    "judge_accuracy",
    "judge_path",
    "label_entropy",
    "load_judge",
]

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


# --------------------------------------------------------------------------------------
# Scores of generated digits in the judge's eyes (lessons 00, 01, 08, 09)
# --------------------------------------------------------------------------------------


def judge_accuracy(images: torch.Tensor, labels: torch.Tensor, judge: Judge | None = None) -> float:
    """Fraction of images that the judge classifies as their conditioning label.

    Args:
        images: generated images ``(N, 1, 28, 28)`` in ``[-1, 1]`` (clamped).
        labels: the labels they were generated for, ``(N,)`` int64.
        judge: a :class:`Judge` (default: the shipped one).

    Returns:
        Accuracy in ``[0, 1]`` (the judge scores over 99% on real test digits).
    """
    judge = judge or load_judge()
    pred = judge.predict(images)  # (N,)
    return float((pred == labels.to(pred.device)).float().mean())


def frechet_distance(images_a: torch.Tensor, images_b: torch.Tensor, judge: Judge | None = None) -> float:
    """Frechet distance between two image sets in the judge's 128-d features.

    Its floor is the distance between real train and test images of the same size.

    Args:
        images_a: ``(N, 1, 28, 28)`` in ``[-1, 1]``.
        images_b: ``(M, 1, 28, 28)`` in ``[-1, 1]``.
        judge: a :class:`Judge` (default: the shipped one).
    """
    judge = judge or load_judge()
    return frechet_distance_features(judge.features(images_a), judge.features(images_b))


def label_entropy(images: torch.Tensor, judge: Judge | None = None) -> float:
    """Entropy (nats) of the histogram of the judge's predicted labels: mode coverage.

    ``H = -sum_c p_c log p_c`` with ``p_c`` the fraction of images predicted as class ``c``:
    ``log 10 = 2.303`` when all digits are equally frequent, ``0`` when every sample is the same
    digit. For unconditional or guided samples (lesson 08's quality / diversity trade-off).
    """
    judge = judge or load_judge()
    pred = judge.predict(images)  # (N,)
    p = torch.bincount(pred, minlength=judge.num_classes).double() / pred.numel()  # (C,)
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def feature_spread(images: torch.Tensor, labels: torch.Tensor | None = None, judge: Judge | None = None) -> float:
    """Within-class diversity: root mean per-feature variance in the judge's feature space.

    ``sqrt(mean_c tr(Cov(f | class c)) / F)``, averaged over the classes present (``labels``;
    ``None`` treats all images as one class). Compare with the same number on real images:
    a guided model that collapses to one prototype per class scores far below real data.

    Args:
        images: ``(N, 1, 28, 28)`` in ``[-1, 1]``.
        labels: ``(N,)`` conditioning labels, or ``None``.
        judge: a :class:`Judge` (default: the shipped one).
    """
    judge = judge or load_judge()
    f = judge.features(images).double()  # (N, F)
    labels = torch.zeros(f.shape[0], dtype=torch.long) if labels is None else labels.to(f.device)
    traces = []
    for c in labels.unique():
        fc = f[labels == c]
        if fc.shape[0] >= 2:
            traces.append(fc.var(0).mean())
    if not traces:
        raise ValueError("feature_spread needs at least two images of some class")
    return float(torch.stack(traces).mean().sqrt())
