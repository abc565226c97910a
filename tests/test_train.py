"""The training loop, EMA and load-or-train checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tutorlib.checkpoints import fingerprint
from tutorlib.device import profile
from tutorlib.train import (
    EMA,
    TrainConfig,
    TrainHistory,
    TrainingDiverged,
    batch_sampler,
    file_sha256,
    load_checkpoint,
    load_or_train,
    lr_at,
    save_checkpoint,
    train,
)

QUIET = TrainConfig(steps=200, lr=5e-2, ema_decay=0.9, progress=False, check_every=10)


def _regression(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([[2.0], [-3.0]])
    x = torch.randn(256, 2, generator=g)
    y = x @ w + 0.5
    return x, y, g


def _mse(model, batch):
    x, y = batch
    return (model(x) - y).pow(2).mean()


def test_loss_decreases_on_tiny_regression():
    x, y, g = _regression()
    model = nn.Linear(2, 1)
    hist = train(model, _mse, batch_sampler(x, y, batch_size=32, generator=g), QUIET)
    assert isinstance(hist, TrainHistory)
    assert len(hist.losses) == len(hist.steps) == len(hist.wall_times) == len(hist.lrs) == 200
    assert hist.stop_reason == "steps" and hist.steps_per_s > 0
    assert hist.final_loss < 0.01 * hist.losses[0]
    assert _mse(hist.ema_model, (x, y)) < 0.01 * hist.losses[0]  # the EMA copy is good too
    assert hist.ema_model is not model and not any(p.requires_grad for p in hist.ema_model.parameters())
    assert not model.training


def test_sampler_kinds_callable_iterator_iterable():
    x, y, _ = _regression()
    cfg = QUIET.replace(steps=7, ema_decay=None)
    batches = [(x[:8], y[:8]), (x[8:16], y[8:16])]
    for sampler in (lambda step: batches[step % 2], iter(batches * 4), batches):
        hist = train(nn.Linear(2, 1), _mse, sampler, cfg)
        assert len(hist.losses) == 7 and hist.ema is None
        assert hist.ema_model is hist.model


def test_nan_loss_names_the_step():
    x, y, g = _regression()

    def loss(model, batch):
        step = loss.calls
        loss.calls += 1
        out = _mse(model, batch)
        return out * float("nan") if step == 13 else out

    loss.calls = 0
    with pytest.raises(TrainingDiverged, match=r"at step 13\b"):
        train(nn.Linear(2, 1), loss, batch_sampler(x, y, batch_size=8, generator=g), QUIET.replace(steps=50))
    assert issubclass(TrainingDiverged, FloatingPointError)


def test_inf_loss_is_detected_on_last_step():
    # the check also runs after the final step, even when it falls between check_every steps
    def sampler(step):
        return torch.full((4, 2), 999.0 if step == 4 else 1.0), torch.zeros(4, 1)

    def loss(model, batch):
        return _mse(model, batch) * (float("inf") if batch[0][0, 0] == 999 else 1.0)

    with pytest.raises(TrainingDiverged, match=r"loss = inf at step 4\b"):
        train(nn.Linear(2, 1), loss, sampler, QUIET.replace(steps=5, check_every=100))


def test_time_budget_stops_training_and_says_so():
    x, y, g = _regression()
    cfg = QUIET.replace(steps=10**7, time_budget_s=0.3)
    with pytest.warns(UserWarning, match="time budget"):
        hist = train(nn.Linear(2, 1), _mse, batch_sampler(x, y, batch_size=8, generator=g), cfg)
    assert hist.stop_reason == "time_budget"
    assert 0 < hist.steps_done < 10**7 and hist.total_time_s < 5.0
    assert not hist.complete and hist.steps_requested == 10**7
    assert hist.summary()["complete"] is False and "STOPPED EARLY" in hist.describe()


def _seeded_run(slow: bool):
    """One config and seed; ``slow`` sleeps inside every step (a slower or busier machine)."""
    import time

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.SiLU(), nn.Linear(16, 1))
    x, y, g = _regression(1)

    def loss(m, batch):
        if slow:
            time.sleep(0.002)
        return _mse(m, batch)

    cfg = TrainConfig(steps=120, lr=1e-2, warmup_steps=10, cosine_decay=True, min_lr_ratio=0.1, ema_decay=0.9,
                      progress=False, check_every=7)
    hist = train(model, loss, batch_sampler(x, y, batch_size=16, generator=g), cfg)
    return hist


def test_same_seed_same_model_on_a_slow_machine():
    """Training length and learning rate depend on the step alone: a slow run gives the same bits."""
    fast, slow = _seeded_run(False), _seeded_run(True)
    assert slow.total_time_s > fast.total_time_s  # the slow run really was slower
    assert fast.complete and slow.complete and fast.lrs == slow.lrs
    for (name, a), b in zip(fast.model.state_dict().items(), slow.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(fast.ema.model.state_dict().values(), slow.ema.model.state_dict().values()):
        assert torch.equal(a, b)


def test_load_or_train_never_loads_a_run_cut_short(tmp_path):
    calls = []

    def train_fn(model, budget):
        calls.append(budget)
        x, y, g = _regression()
        cfg = QUIET.replace(steps=10**6 if budget else 20, time_budget_s=budget)
        return train(model, _mse, batch_sampler(x, y, batch_size=8, generator=g), cfg)

    with pytest.warns(UserWarning, match="time budget"):
        first = load_or_train("cut", lambda m: train_fn(m, 0.2), model=nn.Linear(2, 1), directory=tmp_path)
    assert not first.loaded and first.metadata["history"]["complete"] is False
    with pytest.warns(UserWarning, match=r"stopped after \d+ of 1000000 steps"):
        second = load_or_train("cut", lambda m: train_fn(m, None), model=nn.Linear(2, 1), directory=tmp_path)
    assert not second.loaded and calls == [0.2, None]
    third = load_or_train("cut", lambda m: train_fn(m, None), model=nn.Linear(2, 1), directory=tmp_path)
    assert third.loaded and calls == [0.2, None]


def test_ema_math():
    model = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9, warmup=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert torch.allclose(ema.model.weight, torch.full((1, 3), 0.1))
    ema.update(model)
    assert torch.allclose(ema.model.weight, torch.full((1, 3), 1 - 0.9**2))
    # warm-up: d_n = min(decay, (1 + n) / (10 + n)); first update uses 1/10
    zero = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        zero.weight.fill_(0.0)
    warm = EMA(zero, decay=0.999)
    assert warm.current_decay() == pytest.approx(0.1)
    warm.update(model)
    assert torch.allclose(warm.model.weight, torch.full((1, 3), 0.9))
    assert warm.current_decay() == pytest.approx(2 / 11)
    target = nn.Linear(3, 1, bias=False)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.model.weight)
    state = ema.state_dict()
    other = EMA(model, decay=0.5)
    other.load_state_dict(state)
    assert other.num_updates == 2 and other.decay == 0.9 and torch.equal(other.model.weight, ema.model.weight)


def test_lr_schedule_warmup_and_cosine():
    cfg = TrainConfig(steps=110, lr=1.0, warmup_steps=10, cosine_decay=True, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(110, cfg) == pytest.approx(0.1)
    assert lr_at(50, cfg.replace(cosine_decay=False)) == 1.0


def test_profile_configs():
    for name in ("smoke", "standard", "full"):
        P = profile(name)
        cfg = TrainConfig.from_profile(P)
        assert cfg.steps == P.steps_2d and cfg.time_budget_s is None  # steps, never a clock
        assert cfg.warmup_steps == min(200, P.steps_2d // 10) and cfg.lr == 3e-3


def _trainer(calls):
    def train_fn(model):
        calls.append(1)
        x, y, g = _regression()
        return train(model, _mse, batch_sampler(x, y, batch_size=32, generator=g), QUIET.replace(steps=20))

    return train_fn


def test_load_or_train_trains_then_loads(tmp_path):
    calls: list[int] = []
    cfg = {"steps": 20, "seed": 0}
    first = load_or_train("lin", _trainer(calls), model=nn.Linear(2, 1), config=cfg, directory=tmp_path)
    assert not first.loaded and calls == [1]
    assert first.path == tmp_path / "lin.pt" and (tmp_path / "lin.sha256").is_file()
    assert first.metadata["config"] == cfg and first.metadata["history"]["steps_done"] == 20
    assert isinstance(first.result, TrainHistory)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lin.pt", "lin.sha256"]  # no temp files left
    second = load_or_train("lin", _trainer(calls), model=nn.Linear(2, 1), config=cfg, directory=tmp_path)
    assert second.loaded and calls == [1]
    assert torch.equal(second.model.weight, first.model.weight)
    assert second.metadata["config"] == cfg
    raw = torch.load(tmp_path / "lin.pt", weights_only=True)  # plain tensors and types only
    assert set(raw) == {"state_dict", "metadata"}


def test_corrupted_checkpoint_warns_and_retrains(tmp_path):
    calls: list[int] = []
    load_or_train("lin", _trainer(calls), model=nn.Linear(2, 1), directory=tmp_path)
    path = tmp_path / "lin.pt"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        again = load_or_train("lin", _trainer(calls), model=nn.Linear(2, 1), directory=tmp_path)
    assert not again.loaded and calls == [1, 1]
    assert file_sha256(path) == (tmp_path / "lin.sha256").read_text().split()[0]  # rewritten, valid again


def test_missing_sidecar_or_other_config_retrains(tmp_path):
    calls: list[int] = []
    load_or_train("lin", _trainer(calls), model=nn.Linear(2, 1), config={"a": 1}, directory=tmp_path)
    with pytest.warns(UserWarning, match="config"):
        r = load_or_train("lin", _trainer(calls), model=nn.Linear(2, 1), config={"a": 2}, directory=tmp_path)
    assert not r.loaded
    (tmp_path / "lin.sha256").unlink()
    with pytest.warns(UserWarning, match="sha256"):
        r = load_or_train("lin", _trainer(calls), model=nn.Linear(2, 1), config={"a": 2}, directory=tmp_path)
    assert not r.loaded and calls == [1, 1, 1]
    with pytest.warns(UserWarning, match="does not fit"):
        r = load_or_train("lin", _trainer(calls), model=nn.Linear(2, 3), config={"a": 2}, directory=tmp_path)


def test_save_and_load_checkpoint_roundtrip(tmp_path):
    m = nn.Linear(2, 2)
    digest = save_checkpoint(tmp_path / "m.pt", m, {"note": "x", "path": tmp_path})
    ck = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(ck["state_dict"]["weight"], m.weight.detach())
    assert ck["metadata"]["note"] == "x" and isinstance(ck["metadata"]["path"], str)
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(tmp_path / "m.pt", expected_sha256="0" * 64)
    assert digest == file_sha256(tmp_path / "m.pt")


def test_search_order_shipped_then_cache(tmp_path, monkeypatch):
    import tutorlib.checkpoints as T

    shipped, cache = tmp_path / "shipped", tmp_path / "cache"
    monkeypatch.setattr(T, "shipped_checkpoint_dir", lambda: shipped)
    monkeypatch.setenv("TUTORLIB_DATA_DIR", str(cache))
    assert T.checkpoint_dirs() == [shipped, cache / "checkpoints"]
    calls: list[int] = []
    r = load_or_train("lin", _trainer(calls), model=nn.Linear(2, 1))
    assert r.path == cache / "checkpoints" / "lin.pt"  # new checkpoints go to the cache
    m = nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.fill_(7.0)
    save_checkpoint(shipped / "lin.pt", m)
    r = load_or_train("lin", _trainer(calls), model=nn.Linear(2, 1))
    assert r.loaded and r.path == shipped / "lin.pt" and float(r.model.weight.detach()[0, 0]) == 7.0
    assert calls == [1]


def test_compile_flag_wraps_the_model_and_shares_weights(monkeypatch):
    # the real inductor compile is measured in bench/bench_train_speed.py; here a cheap backend
    seen = []
    real_compile = torch.compile

    def fake_compile(model):
        seen.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", fake_compile)
    x, y, g = _regression()
    model = nn.Linear(2, 1)
    before = model.weight.detach().clone()
    hist = train(model, _mse, batch_sampler(x, y, batch_size=8, generator=g), QUIET.replace(steps=3, compile=True))
    assert seen == [model] and hist.model is model
    assert len(hist.losses) == 3 and all(math.isfinite(v) for v in hist.losses)
    assert not torch.equal(model.weight, before)  # the compiled wrapper trained the original weights


def test_flow_matching_on_moons_end_to_end():
    """TimeMLP + train + EMA + energy distance: a smoke-size flow-matching run beats the untrained model."""
    from tutorlib.data import moons
    from tutorlib.metrics import energy_distance
    from tutorlib.models import TimeMLP

    g = torch.Generator().manual_seed(0)

    def fm_loss(model, batch):
        x1 = batch  # (B, 2) data
        x0 = torch.randn(x1.shape, generator=g)  # (B, 2) noise
        t = torch.rand(x1.shape[0], generator=g)  # (B,)
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        return (model(xt, t) - (x1 - x0)).pow(2).mean()

    @torch.no_grad()
    def euler(model, n=500, steps=20):
        x = torch.randn(n, 2, generator=torch.Generator().manual_seed(1))
        for k in range(steps):
            x = x + model(x, torch.full((n,), k / steps)) / steps
        return x

    model = TimeMLP(hidden=64, depth=2)
    ref = moons(500, generator=torch.Generator().manual_seed(2))
    before = float(energy_distance(euler(model), ref))
    cfg = TrainConfig(steps=400, lr=3e-3, warmup_steps=20, cosine_decay=True, ema_decay=0.99, progress=False)
    hist = train(model, fm_loss, lambda step: moons(256, generator=g), cfg)
    after = float(energy_distance(euler(hist.ema_model), ref))
    assert after < 0.25 * before, (before, after)


def test_prefetcher_returns_the_same_batches_in_order():
    from tutorlib.train import Prefetcher

    def make():
        gen = torch.Generator().manual_seed(3)
        return lambda step: (step, torch.randn(4, generator=gen))

    plain, ahead = make(), Prefetcher(make(), depth=3)
    for step in range(20):
        s0, a = plain(step)
        s1, b = ahead(step)
        assert s0 == s1 == step
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="consecutive"):
        ahead(25)
    ahead.close()


def test_prefetcher_reraises_the_samplers_error_with_its_step():
    from tutorlib.train import Prefetcher

    def sampler(step):
        if step == 2:
            raise KeyError("no such batch")
        return step

    ahead = Prefetcher(sampler, depth=2)
    assert ahead(0) == 0 and ahead(1) == 1
    with pytest.raises(RuntimeError, match="failed at step 2") as info:
        ahead(2)
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ValueError, match="depth"):
        Prefetcher(sampler, depth=0)


def test_train_accepts_a_prefetcher_and_gives_the_same_history():
    from tutorlib.train import Prefetcher

    def run(prefetch: bool):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 1)
        gen = torch.Generator().manual_seed(1)
        sampler = lambda step: torch.randn(16, 2, generator=gen)  # noqa: E731
        batches = Prefetcher(sampler) if prefetch else sampler
        cfg = TrainConfig(steps=30, lr=1e-2, ema_decay=None, progress=False)
        return train(model, lambda m, b: m(b).square().mean(), batches, cfg).losses

    assert run(True) == run(False)


def test_lr_is_a_function_of_the_step_alone():
    import inspect

    assert list(inspect.signature(lr_at).parameters) == ["step", "config"]
    cfg = TrainConfig(steps=1000, lr=1.0, warmup_steps=10, cosine_decay=True, min_lr_ratio=0.0, time_budget_s=1.0)
    assert lr_at(505, cfg) == pytest.approx(0.5)  # a time budget does not bend the schedule
    assert lr_at(1000, cfg) == pytest.approx(0.0, abs=1e-12) and lr_at(5000, cfg) == pytest.approx(0.0, abs=1e-12)




# --- faults end cleanly -------------------------------------------------------------------------


def test_a_loss_that_explodes_stops_the_run_and_nothing_is_cached(tmp_path):
    x, y, g = _regression()

    def train_fn(model):
        cfg = TrainConfig(steps=400, lr=1e6, grad_clip=None, ema_decay=None, progress=False, check_every=10)
        return train(model, _mse, batch_sampler(x, y, batch_size=32, generator=g), cfg)

    torch.manual_seed(0)
    with pytest.raises(TrainingDiverged, match=r"grew from .* to .*step \d+ of 400.*lower the learning rate"):
        load_or_train("exploding", train_fn, model=nn.Linear(2, 1), directory=tmp_path)
    assert not list(tmp_path.iterdir()), "a diverged model was cached"


def test_malformed_configs_and_losses_say_what_is_wrong():
    x, y, g = _regression()
    sampler = batch_sampler(x, y, batch_size=8, generator=g)
    with pytest.raises(ValueError, match="check_every must be a whole number >= 1"):
        train(nn.Linear(2, 1), _mse, sampler, QUIET.replace(check_every=0))
    with pytest.raises(TypeError, match="not loss.item()"):
        train(nn.Linear(2, 1), lambda m, b: float(_mse(m, b)), sampler, QUIET)
    with pytest.raises(ValueError, match="does not depend on the model's parameters"):
        train(nn.Linear(2, 1), lambda m, b: _mse(m, b).detach(), sampler, QUIET)
    with pytest.raises(ValueError, match="time_budget_s must be a positive"):
        train(nn.Linear(2, 1), _mse, sampler, QUIET.replace(time_budget_s=0))


def _fake_checkpoint(path, write):
    from tutorlib.files import file_sha256

    write(path)
    path.with_suffix(".sha256").write_text(f"{file_sha256(path)}  {path.name}\n")


@pytest.mark.parametrize("kind", ["list", "no state_dict", "empty", "truncated zip", "state_dict of junk"])
def test_a_file_that_matches_its_sidecar_but_is_no_checkpoint_is_retrained(tmp_path, kind):
    path = tmp_path / "odd.pt"
    good = tmp_path / "good.pt"
    save_checkpoint(good, nn.Linear(2, 1))
    writers = {
        "list": lambda p: torch.save([1, 2], p),
        "no state_dict": lambda p: torch.save({"weights": {}}, p),
        "empty": lambda p: p.write_bytes(b""),
        "truncated zip": lambda p: p.write_bytes(good.read_bytes()[:200]),
        "state_dict of junk": lambda p: torch.save({"state_dict": {"weight": 3}, "metadata": {}}, p),
    }
    _fake_checkpoint(path, writers[kind])
    calls = []
    with pytest.warns(UserWarning, match="training 'odd' instead"):
        out = load_or_train("odd", lambda m: calls.append(1), model=nn.Linear(2, 1), directory=tmp_path)
    assert calls == [1] and not out.loaded
    assert load_checkpoint(path)["state_dict"]  # and the retrained one is a real checkpoint now


def test_a_sidecar_that_is_a_folder_is_reported_and_retrained(tmp_path):
    save_checkpoint(tmp_path / "m.pt", nn.Linear(2, 1))
    (tmp_path / "m.sha256").unlink()
    (tmp_path / "m.sha256").mkdir()
    with pytest.raises(ValueError, match="is a folder, not a sha256 file"):
        load_checkpoint(tmp_path / "m.pt")
    calls = []
    with pytest.warns(UserWarning) as record:
        out = load_or_train("m", lambda m: calls.append(1), model=nn.Linear(2, 1), directory=tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "is a folder" in messages and "could not save it" in messages
    assert calls == [1] and not out.loaded


@pytest.mark.parametrize("crash_at", ["before the .pt is replaced", "before the sidecar is finished"])
def test_a_crash_during_save_keeps_a_valid_pair(tmp_path, monkeypatch, crash_at):
    import os

    import tutorlib.checkpoints as ck

    path = tmp_path / "m.pt"
    old_model, new_model = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        old_model.weight.fill_(1.0)
        new_model.weight.fill_(2.0)
    save_checkpoint(path, old_model)
    real_replace, real_atomic = os.replace, ck.atomic_write
    calls = {"n": 0}

    class Killed(BaseException):
        pass

    if crash_at == "before the .pt is replaced":
        def replace(src, dst):
            if str(dst) == str(path):
                raise Killed
            return real_replace(src, dst)
        monkeypatch.setattr(ck.os, "replace", replace)
    else:
        def atomic(p, write):
            calls["n"] += 1
            if calls["n"] == 2:  # the final sidecar rewrite
                raise Killed
            return real_atomic(p, write)
        monkeypatch.setattr(ck, "atomic_write", atomic)
    with pytest.raises(Killed):
        save_checkpoint(path, new_model)
    monkeypatch.undo()
    weight = load_checkpoint(path)["state_dict"]["weight"]  # the sidecar lists the digest of what is there
    expected = 1.0 if crash_at == "before the .pt is replaced" else 2.0
    assert torch.all(weight == expected)


def test_temporaries_of_a_killed_save_are_swept(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".m.pt.{dead.pid}.xyz.tmp"
    stale.write_bytes(b"x" * 1000)
    save_checkpoint(tmp_path / "m.pt", nn.Linear(2, 1))
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.sha256"]


@pytest.mark.parametrize("env, shown", [("", True), ("1", False)])
def test_tqdm_disable_turns_the_bar_off_even_in_a_notebook(monkeypatch, capsys, env, shown):
    """The book sets TQDM_DISABLE=1 so that a page shows a training cell's summary, not a bar; tqdm's
    notebook bar ignores that variable, so train() reads it itself."""

    monkeypatch.setenv("TQDM_DISABLE", env)
    x, y, g = _regression()
    model = nn.Linear(2, 1)
    train(model, _mse, lambda step: (x, y), QUIET.replace(steps=5, progress=True, desc="bar-test"))
    assert ("bar-test" in capsys.readouterr().err) is shown


def _noisy_trainer(generator: torch.Generator, calls: list[str], name: str):
    """Trains a Linear on targets drawn from `generator` (so training advances the shared stream)."""
    def train_fn(model: nn.Module) -> None:
        calls.append(name)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(5):
            x = torch.randn(8, 2, generator=generator)
            loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return train_fn


def _lesson(directory, calls, *, lr_of_second: float = 0.1):
    """A miniature lesson: two chained trainings with draws from one generator before, between and after."""
    from tutorlib.checkpoints import CheckpointChain

    gen = torch.Generator().manual_seed(0)
    chain = CheckpointChain("mini", "smoke", gen, directory=directory)
    before = torch.rand(3, generator=gen)
    torch.manual_seed(1)
    first = chain("first", _noisy_trainer(gen, calls, "first"), model=nn.Linear(2, 1), config={"steps": 5}).model
    between = torch.rand(3, generator=gen)
    torch.manual_seed(2)
    second_model = nn.Linear(2, 1)
    second_model.load_state_dict(first.state_dict())  # starts from the first, as a reflow round does
    second = chain("second", _noisy_trainer(gen, calls, "second"), model=second_model,
                   config={"steps": 5, "lr": lr_of_second}).model
    after = torch.rand(3, generator=gen)
    return chain, (before, between, after), (first.weight.detach().clone(), second.weight.detach().clone())


def test_checkpoint_chain_prints_the_same_run_whether_it_trains_or_loads(tmp_path):
    calls: list[str] = []
    cold, draws_cold, weights_cold = _lesson(tmp_path, calls)
    assert calls == ["first", "second"] and cold.loaded == []
    warm, draws_warm, weights_warm = _lesson(tmp_path, calls)
    assert calls == ["first", "second"] and warm.loaded == ["first", "second"]  # nothing trained again
    for a, b in zip(draws_cold + weights_cold, draws_warm + weights_warm):
        assert torch.equal(a, b)  # the generator continues where training would have left it
    assert "loaded mini_first_smoke.pt" in warm.runs["first"].describe()
    assert "steps" in cold.runs["first"].describe() or "trained" in cold.runs["first"].describe()
    cfg = warm.runs["second"].metadata["config"]
    assert cfg["after"] == fingerprint(warm.runs["first"].model) and len(cfg["generator_in"]) == 16


def test_checkpoint_chain_retrains_what_follows_a_changed_step(tmp_path):
    calls: list[str] = []
    _lesson(tmp_path, calls)
    calls.clear()
    with pytest.warns(UserWarning, match="config"):
        chain, _, _ = _lesson(tmp_path, calls, lr_of_second=0.05)  # the second config changed: only it retrains
    assert calls == ["second"] and chain.loaded == ["first"]
    # a different generator state before the first training: both retrain, though the configs are equal
    from tutorlib.checkpoints import CheckpointChain

    calls.clear()
    gen = torch.Generator().manual_seed(0)
    torch.rand(4, generator=gen)  # one more draw than the lesson makes before its first training
    chain = CheckpointChain("mini", "smoke", gen, directory=tmp_path)
    with pytest.warns(UserWarning, match="config"):
        run = chain("first", _noisy_trainer(gen, calls, "first"), model=nn.Linear(2, 1), config={"steps": 5})
    assert not run.loaded and calls == ["first"]
    with pytest.raises(ValueError, match="already in this chain"):
        chain("first", _noisy_trainer(gen, calls, "first"), model=nn.Linear(2, 1))


def test_a_chained_checkpoint_without_its_generator_state_is_retrained(tmp_path):
    gen = torch.Generator().manual_seed(0)
    calls: list[str] = []
    cfg = {"steps": 5}
    load_or_train("plain", _noisy_trainer(gen, calls, "plain"), model=nn.Linear(2, 1), config=cfg, directory=tmp_path)
    gen = torch.Generator().manual_seed(0)
    from tutorlib.checkpoints import save_checkpoint
    # the same config and generator fingerprint, but no stored state: cannot continue the stream, so train
    meta = {"config": {**cfg, "generator_in": fingerprint(gen)}, "history": {"complete": True}}
    save_checkpoint(tmp_path / "nostate.pt", nn.Linear(2, 1), meta)
    with pytest.warns(UserWarning, match="generator state"):
        run = load_or_train("nostate", _noisy_trainer(gen, calls, "nostate"), model=nn.Linear(2, 1), config=cfg,
                            directory=tmp_path, generator=gen)
    assert not run.loaded and calls == ["plain", "nostate"]


def test_fingerprint_sees_every_bit_and_rejects_other_things():
    a = torch.zeros(3)
    b = a.clone()
    b[1] = torch.finfo(torch.float32).tiny  # one bit differs
    assert fingerprint(a) == fingerprint(a.clone()) != fingerprint(b)
    assert fingerprint(a) != fingerprint(a.double())  # the dtype counts
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert fingerprint(g1) == fingerprint(g2)
    torch.rand(1, generator=g2)
    assert fingerprint(g1) != fingerprint(g2)
    with pytest.raises(TypeError, match="fingerprint takes"):
        fingerprint([1, 2])
