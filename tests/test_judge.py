"""The shipped MNIST judge: verified checkpoint, >= 99% test accuracy, MNIST metrics."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.judge import JUDGE_SHA256, Judge, judge_path, load_judge
from tutorlib.judge import feature_spread, frechet_distance, judge_accuracy, label_entropy
from tutorlib.train import file_sha256


@pytest.fixture(scope="module")
def judge() -> Judge:
    return load_judge()


def _load(mnist_source, split, limit=None):
    from tutorlib.data import load_mnist

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUTORLIB_MNIST_MIRROR", str(mnist_source))
        return load_mnist(split, limit=limit, progress=False)


@pytest.fixture(scope="module")
def mnist_test(mnist_source):
    return _load(mnist_source, "test")


@pytest.fixture(scope="module")
def mnist_train_1k(mnist_source):
    return _load(mnist_source, "train", limit=1000)


def test_shipped_checkpoint_is_small_and_verified():
    path = judge_path()
    assert path.is_file(), "data/checkpoints/judge_mnist.pt must ship with the repository"
    assert path.stat().st_size < 2_000_000
    assert file_sha256(path) == JUDGE_SHA256


def test_judge_test_accuracy_at_least_99_percent(judge, mnist_test):
    images, labels = mnist_test
    assert images.shape == (10_000, 1, 28, 28)
    acc = judge_accuracy(images, labels, judge)
    assert acc >= 0.99, acc
    assert judge.metadata["test_accuracy"] == pytest.approx(acc, abs=5e-4)  # the recorded number is reproduced


def test_frechet_distance_real_floor_vs_corrupted(judge, mnist_test, mnist_train_1k):
    test_images = mnist_test[0][:1000]
    train_images = mnist_train_1k[0]
    floor = frechet_distance(train_images, test_images, judge)
    g = torch.Generator().manual_seed(0)
    noisy = (test_images + 0.5 * torch.randn(test_images.shape, generator=g)).clamp(-1, 1)
    blurred = torch.nn.functional.avg_pool2d(test_images, 3, stride=1, padding=1)
    assert frechet_distance(train_images, noisy, judge) > 5 * floor
    assert frechet_distance(train_images, blurred, judge) > floor
    ones = test_images[mnist_test[1][:1000] == 1]
    assert frechet_distance(train_images, ones, judge) > 5 * floor  # one mode only


def test_diversity_measures(judge, mnist_test):
    images, labels = mnist_test[0][:1000], mnist_test[1][:1000]
    assert label_entropy(images, judge) == pytest.approx(math.log(10), abs=0.03)
    ones = images[labels == 1]
    assert label_entropy(ones, judge) < 0.1
    spread_real = feature_spread(images, labels, judge)
    collapsed = images[labels == 1][:1].expand(50, -1, -1, -1)
    assert feature_spread(collapsed, None, judge) == pytest.approx(0.0, abs=1e-5)
    assert spread_real > 0 and feature_spread(images, None, judge) > spread_real  # between-class spread adds up


def test_judge_features_and_clamping(judge):
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    f = judge.features(x)
    assert f.shape == (5, 128) and not f.requires_grad
    assert torch.allclose(judge.logits(x * 3), judge.logits((x * 3).clamp(-1, 1)))
    with pytest.raises(ValueError):
        judge.features(torch.zeros(5, 28, 28))


def test_missing_or_corrupt_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_judge.py"):
        Judge.load(tmp_path / "nope.pt")
    bad = tmp_path / "judge_mnist.pt"
    data = bytearray(judge_path().read_bytes())
    data[-5] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        Judge.load(bad)
