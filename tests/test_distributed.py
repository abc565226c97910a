"""Training past one machine: DDP with two CPU processes (gloo) under torchrun, against one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tutorlib.distributed import GlobalBatches, init_distributed
from tutorlib.recipes import MNISTRecipe

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "train_mnist_ddp.py"
TINY = ["--profile", "smoke", "--steps", "12", "--batch", "8", "--channels", "4", "--limit", "64",
        "--checkpoint-every", "4", "--device", "cpu", "--save-every-rank"]


def test_the_global_batch_does_not_depend_on_the_number_of_processes():
    images = torch.randn(50, 1, 28, 28)
    labels = torch.randint(0, 10, (50,))
    recipe = MNISTRecipe(batch=12)
    whole = GlobalBatches(images, labels, recipe, seed=3)(5)
    for world in (2, 3, 4):
        shards = [GlobalBatches(images, labels, recipe, seed=3, rank=r, world=world)(5) for r in range(world)]
        for i in range(4):
            torch.testing.assert_close(torch.cat([s[i] for s in shards]), whole[i], rtol=0, atol=0)
    assert not torch.equal(GlobalBatches(images, labels, recipe, seed=3)(6)[0], whole[0])  # steps differ
    with pytest.raises(ValueError, match="must divide by the number of processes"):
        GlobalBatches(images, labels, recipe, seed=3, rank=0, world=5)


def test_a_single_process_needs_no_torchrun(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    run = init_distributed("cpu")
    assert (run.rank, run.world, run.backend, run.is_main) == (0, 1, None, True)


def _run(args, out: Path, env, nproc: int | None) -> subprocess.CompletedProcess:
    if nproc is None:
        cmd = [sys.executable, str(SCRIPT)]
    else:
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun), "--standalone", f"--nproc_per_node={nproc}", "--max_restarts=0", str(SCRIPT)]
    return subprocess.run([*cmd, *args, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture
def ddp_env(mnist_source, tmp_path):
    env = dict(os.environ, TUTORLIB_MNIST_MIRROR=str(mnist_source), TUTORLIB_DATA_DIR=str(tmp_path / "cache"),
               TUTORLIB_THREADS="1", OMP_NUM_THREADS="1")
    return env


@pytest.mark.slow
def test_two_processes_train_one_model_and_match_a_single_process(tmp_path, ddp_env):
    two = _run(TINY, tmp_path / "two", ddp_env, nproc=2)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1))
    for name in r0:
        assert torch.equal(r0[name], r1[name]), f"the ranks' copies of {name} differ"
    one = _run(TINY, tmp_path / "one", ddp_env, nproc=None)
    assert one.returncode == 0, one.stderr[-3000:]
    single = torch.load(tmp_path / "one" / "rank0.pt")
    # the same global batches; only the order of the gradient sums differs. Compare what the models
    # compute: a bias just before a GroupNorm has a zero gradient in exact arithmetic, and Adam turns its
    # rounding noise into steps of size lr, so such weights differ while the function does not.
    nets = []
    for state in (r0, single):
        net = MNISTRecipe(base_channels=4).build_model()
        net.load_state_dict(state)
        nets.append(net.eval())
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(6, 1, 28, 28, generator=g), torch.rand(6, generator=g), torch.arange(6)
    with torch.no_grad():
        torch.testing.assert_close(nets[0](x, t, y), nets[1](x, t, y), rtol=1e-3, atol=1e-4)
    from tutorlib.checkpoints import load_checkpoint

    assert load_checkpoint(tmp_path / "two" / "model.pt")["metadata"]["world"] == 2  # rank 0's verified EMA weights


@pytest.mark.slow
def test_a_lost_process_stops_the_job_and_a_resume_finishes_it(tmp_path, ddp_env):
    out = tmp_path / "run"
    failed = _run([*TINY, "--fail-at-step", "6", "--fail-rank", "1"], out, ddp_env, nproc=2)
    assert failed.returncode != 0, "the job went on without one of its processes"
    assert (out / "state.pt").is_file() and not (out / "model.pt").exists()
    from tutorlib.checkpoints import load_state

    assert load_state(out / "state.pt")["step"] == 4  # the last checkpoint before the failure
    resumed = _run([*TINY, "--resume"], out, ddp_env, nproc=2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert '"resumed_from": 4' in resumed.stdout
    whole = _run(TINY, tmp_path / "whole", ddp_env, nproc=2)
    assert whole.returncode == 0, whole.stderr[-3000:]
    a, b = torch.load(out / "rank0.pt"), torch.load(tmp_path / "whole" / "rank0.pt")
    for name in a:  # the same batches after the restart: the same model as an uninterrupted run
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7, msg=name)
    shutil.rmtree(out)
