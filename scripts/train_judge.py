"""Train the course's MNIST judge classifier and write ``data/checkpoints/judge_mnist.pt``.

The judge (:class:`tutorlib.models.MNISTClassifier`) scores generated digits in lessons 00 and
09: classifier accuracy against the conditioning labels and the Frechet distance in its
128-d features (:mod:`tutorlib.judge`). It is trained once by the project and shipped::

    python scripts/train_judge.py --threads 1     # about 6 minutes on one CPU thread

Training: all 60,000 training images, random affine augmentation (rotation +-10 degrees,
scale +-10%, shift +-2 px), AdamW with warm-up and cosine decay, EMA of the weights (the
EMA weights are saved). The script prints the test accuracy and the sha256 to paste into
``tutorlib/judge.py`` (``JUDGE_SHA256``) and ``data/checkpoints/README.md``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tutorlib.data import load_mnist
from tutorlib.device import seed_everything, set_threads
from tutorlib.models import MNISTClassifier, count_parameters
from tutorlib.train import TrainConfig, batch_sampler, save_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, scale and shift of images ``(B, 1, 28, 28)`` in ``[-1, 1]`` (background -1)."""
    B = x.shape[0]
    u = torch.rand(B, 4, generator=generator) * 2 - 1  # (B, 4) in [-1, 1]
    angle = u[:, 0] * math.radians(10.0)
    scale = 1.0 + 0.1 * u[:, 1]
    shift = u[:, 2:] * (2.0 / 14.0)  # 2 px in normalised coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    row0 = torch.stack([cos, -sin, shift[:, 0]], 1)  # (B, 3)
    row1 = torch.stack([sin, cos, shift[:, 1]], 1)  # (B, 3)
    theta = torch.stack([row0, row1], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)  # (B, 28, 28, 2)
    return F.grid_sample(x + 1.0, grid, mode="bilinear", padding_mode="zeros", align_corners=False) - 1.0


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    for i in range(0, images.shape[0], batch):
        correct += (model(images[i:i + batch]).argmax(1) == labels[i:i + batch]).sum().item()
    return correct / images.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=float, default=5.0, help="passes over the 60k training images")
    ap.add_argument("--batch", type=int, default=128, help="batch size")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    ap.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: TUTORLIB_THREADS or all)")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "checkpoints" / "judge_mnist.pt",
                    help="checkpoint path")
    args = ap.parse_args()

    threads = set_threads(args.threads)
    gen = seed_everything(args.seed)
    x_train, y_train = load_mnist("train", progress=False)  # (60000, 1, 28, 28), (60000,)
    x_test, y_test = load_mnist("test", progress=False)  # (10000, 1, 28, 28), (10000,)
    model = MNISTClassifier()
    steps = int(args.epochs * x_train.shape[0] / args.batch)
    print(f"judge: {count_parameters(model):,} parameters, {steps} steps of batch {args.batch}, {threads} thread(s)")

    def loss_fn(net, batch):
        x, y = batch
        return F.cross_entropy(net(augment(x, gen)), y)

    cfg = TrainConfig(steps=steps, lr=args.lr, weight_decay=0.01, warmup_steps=100, cosine_decay=True,
                      min_lr_ratio=0.01, grad_clip=2.0, ema_decay=0.999, check_every=50, desc="judge")
    t0 = time.perf_counter()
    hist = train(model, loss_fn, batch_sampler(x_train, y_train, batch_size=args.batch, generator=gen), cfg)
    minutes = (time.perf_counter() - t0) / 60
    acc_raw = accuracy(model, x_test, y_test)
    hist.ema.copy_to(model)
    acc = accuracy(model, x_test, y_test)
    print(f"test accuracy: raw weights {acc_raw:.4f}, EMA weights {acc:.4f} (saved); trained in {minutes:.1f} min")
    meta = {"name": "judge_mnist", "command": "python scripts/train_judge.py",
            "args": {k: str(v) for k, v in vars(args).items() if k != "out"},
            "test_accuracy": acc, "train_minutes": round(minutes, 2), "threads": threads, "torch": torch.__version__,
            "history": hist.summary()}
    digest = save_checkpoint(args.out, model, meta)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), sha256 {digest}")


if __name__ == "__main__":
    main()
