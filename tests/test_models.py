import pytest
import torch
from PIL import Image

from companion import models
from companion.errors import InputShapeError, UnknownModelError, WeightsUnavailableError

# Parameter counts of the published architectures (torchvision / timm, 1000 classes).
PUBLISHED = {
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "efficientnet_lite0": 4_652_008,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_architectures_and_heads(name):
    model = models.create(name)
    assert models.count_parameters(model) == PUBLISHED[name]
    dim = models.spec(name).feature_dim
    assert models.count_parameters(models.create(name, num_classes=7)) == PUBLISHED[name] - 1000 * (dim + 1) + 7 * (dim + 1)


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
    with pytest.raises(InputShapeError, match=r"expects images of shape \(N, 3, H, W\), got \(2, 1, 32, 32\).*in_channels=1"):
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


@pytest.mark.parametrize(
    "photo,expected",
    [("chelsea", {"tabby", "tiger cat", "Egyptian cat"}), ("coffee", {"espresso", "cup"}), ("rocket", {"missile", "projectile"})],
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


def test_random_weights_do_not_recognise_photos():
    """The check above can fail: an untrained network does not find the cat."""
    import skimage.data

    torch.manual_seed(0)
    model = models.create("efficientnet_lite0").eval()
    image = Image.fromarray(skimage.data.chelsea())
    with torch.no_grad():
        top1 = model(models.eval_transform("efficientnet_lite0")(image).unsqueeze(0)).argmax().item()
    assert models.imagenet_categories()[top1] not in {"tabby", "tiger cat", "Egyptian cat"}
