"""The CUDA engine: mixed precision, channels-last, the GPU-resident loader (skipped without a GPU).

Run on a GPU machine with ``pytest -m gpu tests``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from companion import data, hardware, models, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


@contextlib.contextmanager
def _ieee_fp32():
    """Full-precision fp32 matmuls and convolutions (the engine turns TF32 on for speed)."""
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
    prepared = hardware.prepare_model(model, CUDA)  # channels-last, cuDNN benchmark, TF32 on
    with torch.no_grad(), _ieee_fp32():
        out = prepared(hardware.to_device(x, CUDA)).cpu()
    conv = prepared.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and torch.backends.cudnn.benchmark
    assert torch.allclose(out, reference, atol=1e-3, rtol=1e-3)


def test_gpu_resident_loader_equals_cpu_loader(fashion_small):
    train_set, _ = fashion_small
    cpu = data.make_loader(train_set, 32, shuffle=True, seed=3)
    gpu = data.make_loader(train_set, 32, shuffle=True, seed=3, device=CUDA)
    assert gpu.inputs.device.type == "cuda"  # the whole set lives on the GPU
    prep = data.BatchTransform.for_model("efficientnet_lite0", size=64)
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.device.type == "cuda" and torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())
        assert torch.allclose(prep(xc), prep.to(CUDA)(xg).cpu(), atol=1e-5)
        prep.cpu()


def test_fit_with_amp_on_gpu_learns(fashion_small):
    train_set, test_set = fashion_small
    hardware.seed_everything(0)
    model = models.create("efficientnet_lite0", pretrained=True, num_classes=10)
    prep = data.BatchTransform.for_model("efficientnet_lite0", size=64)
    history = train.fit(
        model,
        data.make_loader(train_set, 50, shuffle=True, device=CUDA),
        data.make_loader(test_set, 100, device=CUDA),
        epochs=3,
        lr=1e-3,
        preprocess=prep,
        device=CUDA,
        verbose=False,
    )
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in history)
    assert history[-1]["val_accuracy"] > 0.4


def test_fit_compiled_matches_the_plain_forward(fashion_small):
    """``compile=True`` changes how the forward pass runs, not what it computes: two copies of the
    same network (no dropout, whose compiled random masks differ from eager ones), trained from the
    same weights on the same batches in IEEE fp32, end with the same losses and weights up to
    floating-point reordering."""
    train_set, _ = fashion_small
    prep = data.BatchTransform(32, (0.5,), (0.5,), channels=1)
    runs = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = models.SimpleCNN(num_classes=10, in_channels=1, dropout=0.0)
        with _ieee_fp32():
            history = train.fit(
                model,
                data.make_loader(train_set, 50, shuffle=True, seed=1, device=CUDA),
                epochs=2,
                lr=1e-3,
                preprocess=prep,
                device=CUDA,
                verbose=False,
                compile=compiled,
                amp=False,
            )
        runs.append((model, history))
    (plain, plain_history), (compiled, compiled_history) = runs
    for a, b in zip(plain_history, compiled_history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    for (name, a), b in zip(plain.state_dict().items(), compiled.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-3, rtol=1e-3), name
    assert plain_history[-1]["train_loss"] < plain_history[0]["train_loss"]
    assert not any(k.startswith("_orig_mod") for k in compiled.state_dict())  # checkpoints load without compile
