"""The CUDA engine: mixed precision, channels-last, the GPU-resident loader (skipped without a GPU).

Run on a GPU machine with ``pytest -m gpu tests``; ``TLBOOK_WRITE_RESULTS=1`` also records the
outcomes in ``benchmarks/results.json`` (``tests/conftest.py``), which a plain run leaves alone.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from companion import batch_transforms, hardware, loaders, models, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


@contextlib.contextmanager
def _ieee_fp32():
    """Full-precision fp32 matmuls and convolutions (``hardware.configure_backends``, which
    start_chapter and the CLI call, turns TF32 on for speed)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_autocast_logits_match_fp32():
    """Mixed precision changes the logits by about bf16's rounding, not the predictions: on real
    photos (clear winners; Fashion-MNIST images would give ImageNet near-ties) the top class and the
    probabilities agree with full fp32."""
    import skimage.data
    from PIL import Image

    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket(), skimage.data.astronaut()]
    transform = models.eval_transform("efficientnet_lite0")  # the weights' own resize + centre crop + normalise
    x = torch.stack([transform(Image.fromarray(p)) for p in photos]).to(CUDA)  # (4, 3, 224, 224)
    model = models.create("efficientnet_lite0", pretrained=True, num_classes=None).to(CUDA).eval()
    with torch.inference_mode(), _ieee_fp32():
        fp32 = model(x).float()
        with hardware.autocast(CUDA):
            mixed = model(x).float()
    assert hardware.amp_dtype(CUDA) in (torch.bfloat16, torch.float16)
    assert torch.equal(mixed.argmax(1), fp32.argmax(1))
    assert (mixed - fp32).norm() / fp32.norm() < 0.05
    assert torch.allclose(mixed.softmax(1), fp32.softmax(1), atol=0.05)


def test_channels_last_gives_the_same_outputs():
    """The memory layout changes nothing but speed: with TF32 off (IEEE fp32, as on the CPU) the
    channels-last model on the GPU gives the CPU's outputs."""
    model = models.create("resnet18", num_classes=10).eval()
    x = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
    with torch.no_grad(), _ieee_fp32():
        prepared = hardware.prepare_model(model, CUDA)  # channels-last; the backend flags stay as set
        out = prepared(hardware.to_device(x, CUDA)).cpu()
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert prepared.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, reference, atol=1e-3, rtol=1e-3)


def test_gpu_resident_loader_equals_cpu_loader(fashion_small):
    train_set, _ = fashion_small
    cpu = loaders.make_loader(train_set, 32, shuffle=True, seed=3)
    gpu = loaders.make_loader(train_set, 32, shuffle=True, seed=3, device=CUDA)
    assert gpu.inputs.device.type == "cuda"  # the whole set lives on the GPU
    prep = batch_transforms.BatchTransform.for_model("efficientnet_lite0", size=64)
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.device.type == "cuda" and torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())
        assert torch.allclose(prep(xc), prep.to(CUDA)(xg).cpu(), atol=1e-5)
        prep.cpu()


def test_fit_with_amp_on_gpu_learns(fashion_small):
    train_set, test_set = fashion_small
    hardware.seed_everything(0)
    model = models.create("efficientnet_lite0", pretrained=True, num_classes=10).to(CUDA)
    prep = batch_transforms.BatchTransform.for_model("efficientnet_lite0", size=64)
    history = train.fit(
        model,
        loaders.make_loader(train_set, 50, shuffle=True, device=CUDA),
        loaders.make_loader(test_set, 100, device=CUDA),
        epochs=3,
        optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
        preprocess=prep,
    )
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    assert history[-1]["val_accuracy"] > 0.4


def test_fit_and_evaluate_keep_ieee_fp32_when_tf32_is_off(fashion_small):
    """A caller that turned TF32 off (to compare with the CPU, or for exact fp32) keeps it off:
    fit and evaluate never call ``configure_backends``, whose flags are process-wide."""
    train_set, test_set = fashion_small
    hardware.seed_everything(0)
    model = models.SimpleCNN(num_classes=10, in_channels=1).to(CUDA)
    prep = batch_transforms.BatchTransform(32, (0.5,), (0.5,), channels=1)
    with _ieee_fp32():
        train.fit(
            model,
            loaders.make_loader(train_set, 50, shuffle=True, device=CUDA),
            loaders.make_loader(test_set, 100, device=CUDA),
            epochs=1,
            preprocess=prep,
            amp=False,
        )
        train.evaluate(model, loaders.make_loader(test_set, 100, device=CUDA), preprocess=prep, amp=False)
        assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is False


class _RecordsDtype(nn.Linear):
    """A linear layer that notes the dtype of its output (bf16/fp16 under autocast)."""

    def __init__(self):
        super().__init__(8, 3)
        self.dtypes = []

    def forward(self, x):
        out = super().forward(x)
        self.dtypes.append(out.dtype)
        return out


def test_evaluate_runs_in_fp32_without_amp_and_in_the_amp_dtype_with_it():
    model = _RecordsDtype().to(CUDA)
    batches = [(torch.randn(4, 8, device=CUDA), torch.arange(4, device=CUDA) % 3)] * 2
    train.evaluate(model, batches, amp=False)
    assert model.dtypes == [torch.float32] * 2
    model.dtypes.clear()
    train.evaluate(model, batches, amp=True)
    assert model.dtypes == [hardware.amp_dtype(CUDA)] * 2
