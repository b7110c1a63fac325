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


def test_channels_last_on_cuda_and_cpu_not_mps():
    assert device.channels_last(torch.device("cuda")) and device.channels_last(torch.device("cpu"))
    assert not device.channels_last(torch.device("mps"))


def test_to_device_makes_float_image_batches_channels_last_on_the_cpu():
    cpu = torch.device("cpu")
    images = device.to_device(torch.randn(2, 3, 8, 8), cpu)
    assert images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    raw = device.to_device(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), cpu)  # not float: as it was
    features = device.to_device(torch.randn(2, 5), cpu)
    assert raw.is_contiguous() and features.is_contiguous()


def test_prepare_model_keeps_the_parameters_and_uses_channels_last_on_the_cpu():
    """An optimiser built before ``prepare_model`` must still hold the model's parameters."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2))
    params = list(model.parameters())
    prepared = device.prepare_model(model, torch.device("cpu"))
    assert prepared is model and all(a is b for a, b in zip(params, prepared.parameters()))
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_model_device_is_where_the_parameters_are():
    assert device.model_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert device.model_device(torch.nn.Identity()) == torch.device("cpu")  # no parameters: the CPU
    meta = torch.nn.Linear(2, 2, device="meta")
    assert device.model_device(meta).type == "meta"


class _StaysPut(torch.nn.Linear):
    """A model whose ``.to`` moves nothing: lets ``prepare_model`` run for a CUDA device without one."""

    def to(self, *args, **kwargs):
        return self


def test_prepare_model_leaves_the_backend_flags_alone_on_any_device(monkeypatch):
    """``configure_backends`` sets process-wide flags (TF32, cuDNN benchmark): start_chapter and
    the CLI call it once; preparing a model, even for CUDA, must not (a caller that turned TF32
    off for IEEE fp32 keeps it off)."""

    def refuse(device):
        raise AssertionError("prepare_model ran configure_backends")

    monkeypatch.setattr(device, "configure_backends", refuse)
    for where in ("cpu", "cuda", "mps"):
        model = _StaysPut(2, 2)
        assert device.prepare_model(model, torch.device(where)) is model


def test_configure_backends_changes_nothing_off_cuda():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        device.configure_backends(torch.device("cpu"))
        assert (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cudnn.benchmark,
        ) == (False, False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_autocast_is_off_when_disabled_even_where_amp_exists(monkeypatch):
    """``autocast(device, False)`` is a no-op even where the device has an AMP dtype."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "amp_dtype", lambda d: torch.bfloat16)
    with device.autocast(cpu, False):
        assert not torch.is_autocast_enabled("cpu")
    with device.autocast(cpu, True):
        assert torch.is_autocast_enabled("cpu")
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16


def test_inference_batches_are_large_only_on_cuda():
    assert device.inference_batch_size(torch.device("cuda")) == 256
    assert device.inference_batch_size(torch.device("cpu")) == 32
    assert device.inference_batch_size(torch.device("mps")) == 32


def test_an_evaluation_loader_without_a_batch_size_takes_the_devices_inference_batch():
    from companion import data, loaders

    images, labels = torch.zeros(70, 1, 8, 8, dtype=torch.uint8), torch.zeros(70, dtype=torch.long)
    ds = data.ArrayImageDataset(images, labels, ["a"], "test/x", "zeros", real=False)
    assert [len(y) for _, y in loaders.make_loader(ds)] == [32, 32, 6]
    assert loaders.make_loader(ds, 50).batch_size == 50
