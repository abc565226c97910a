import pytest
import torch

from tutorlib import device as dev


def test_get_device_defaults_to_an_available_device(monkeypatch):
    monkeypatch.delenv("TUTORLIB_DEVICE", raising=False)
    d = dev.get_device()
    expected = "cuda" if torch.cuda.is_available() else ("mps" if dev._mps_available() else "cpu")
    assert d.type == expected
    torch.zeros(2, device=d)  # usable


def test_get_device_env_override(monkeypatch):
    monkeypatch.setenv("TUTORLIB_DEVICE", "cpu")
    assert dev.get_device() == torch.device("cpu")


def test_get_device_rejects_unknown_string(monkeypatch):
    monkeypatch.setenv("TUTORLIB_DEVICE", "gpu-please")
    with pytest.raises(ValueError, match="TUTORLIB_DEVICE"):
        dev.get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_get_device_cuda_requested_without_gpu_is_clear(monkeypatch):
    monkeypatch.setenv("TUTORLIB_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        dev.get_device()


def test_seed_everything_makes_global_and_returned_generators_repeatable():
    g1 = dev.seed_everything(123)
    a = (torch.rand(3), torch.rand(3, generator=g1))
    g2 = dev.seed_everything(123)
    b = (torch.rand(3), torch.rand(3, generator=g2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    dev.seed_everything(124)
    assert not torch.equal(torch.rand(3), a[0])


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises(ValueError, match="seed"):
        dev.seed_everything(bad)


def test_profile_default_and_names(monkeypatch):
    monkeypatch.delenv("TUTORLIB_PROFILE", raising=False)
    assert dev.profile().name == "standard"
    for name in ("smoke", "standard", "full"):
        monkeypatch.setenv("TUTORLIB_PROFILE", name)
        assert dev.profile().name == name
    assert dev.profile("SMOKE").name == "smoke"


def test_profiles_scale_monotonically():
    s, m, f = (dev.PROFILES[k] for k in ("smoke", "standard", "full"))
    for field in ("steps_2d", "batch_2d", "n_eval_2d", "steps_mnist", "unet_channels"):
        assert getattr(s, field) < getattr(m, field) <= getattr(f, field), field


def test_profiles_hold_sizes_not_clocks():
    import dataclasses

    names = {f.name for f in dataclasses.fields(dev.Profile)}
    assert not any("time" in n or "budget" in n for n in names), names


def test_unknown_profile_lists_valid_ones(monkeypatch):
    monkeypatch.setenv("TUTORLIB_PROFILE", "quick")
    with pytest.raises(ValueError) as err:
        dev.profile()
    msg = str(err.value)
    assert "quick" in msg and "smoke" in msg and "standard" in msg and "full" in msg


def test_profile_replace_returns_a_changed_copy():
    p = dev.profile("smoke")
    q = p.replace(steps_2d=5)
    assert q.steps_2d == 5 and p.steps_2d != 5 and q.name == "smoke"


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert dev.set_threads(1) == 1
        monkeypatch.setenv("TUTORLIB_THREADS", "2")
        assert dev.set_threads() == 2
        with pytest.raises(ValueError):
            dev.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_fast_sampling_dtype(monkeypatch):
    from tutorlib import device as dev

    monkeypatch.delenv("TUTORLIB_SAMPLING_PRECISION", raising=False)
    assert dev.fast_sampling_dtype("cpu") is None  # float32 unless asked
    assert dev.fast_sampling_dtype("cpu", "float32") is None
    assert dev.fast_sampling_dtype("cpu", "bfloat16") is torch.bfloat16
    monkeypatch.setattr(dev, "_cpu_has_fast_bfloat16", lambda: True)
    assert dev.fast_sampling_dtype("cpu", "auto") is torch.bfloat16
    monkeypatch.setattr(dev, "_cpu_has_fast_bfloat16", lambda: False)
    assert dev.fast_sampling_dtype("cpu", "auto") is None  # emulated bfloat16 would be slower
    assert dev.fast_sampling_dtype("mps", "auto") is None
    monkeypatch.setenv("TUTORLIB_SAMPLING_PRECISION", "bfloat16")
    assert dev.fast_sampling_dtype("cpu") is torch.bfloat16
    monkeypatch.setenv("TUTORLIB_SAMPLING_PRECISION", "half")
    with pytest.raises(ValueError, match="TUTORLIB_SAMPLING_PRECISION='half' is not a sampling precision"):
        dev.fast_sampling_dtype("cpu")
    with pytest.raises(ValueError, match="precision='fp16'"):
        dev.fast_sampling_dtype("cpu", "fp16")
