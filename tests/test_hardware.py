import torch

from companion import hardware as device


def test_choose_device_order(monkeypatch):
    """CUDA first, then Apple's MPS, then the CPU."""
    monkeypatch.delenv("TLBOOK_DEVICE", raising=False)
    for cuda, mps, expected in [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda cuda=cuda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda mps=mps: mps)
        assert device.choose_device().type == expected


def test_choose_device_override(monkeypatch):
    monkeypatch.setenv("TLBOOK_DEVICE", "cpu")
    assert device.choose_device() == torch.device("cpu")
    assert device.choose_device("cpu").type == "cpu"


def test_amp_policy_cpu_is_fp32():
    cpu = torch.device("cpu")
    assert device.amp_dtype(cpu) is None
    assert not device.needs_grad_scaler(cpu)
    with device.autocast(cpu):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


def test_seed_everything_repeats():
    device.seed_everything(3)
    a = torch.randn(5)
    device.seed_everything(3)
    assert torch.equal(a, torch.randn(5))


def test_default_workers_by_platform_and_cores(monkeypatch):
    monkeypatch.setattr(device.platform, "system", lambda: "Darwin")
    assert device.default_num_workers() == 0  # spawn-based workers break notebook-defined datasets
    monkeypatch.setattr(device.platform, "system", lambda: "Linux")
    for cores, workers in [(1, 0), (2, 1), (3, 2), (8, 4), (64, 4)]:
        monkeypatch.setattr(device.os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert device.default_num_workers() == workers, cores
