import pytest
import torch

from companion import data, provenance
from companion.errors import DatasetUnavailableError, ImageFolderError


def test_fashion_mnist_is_real_and_complete():
    train = data.load("fashion_mnist", "train")
    test = data.load("fashion_mnist", "test")
    assert len(train) == 60_000 and len(test) == 10_000
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert train.classes[0] == "T-shirt/top" and train.num_classes == 10
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert train.real and "real Fashion-MNIST" in train.source
    assert "data fashion_mnist/train" in provenance.sources()


def test_mnist_is_real_digits():
    train, test = data.load("mnist", "train"), data.load("mnist", "test")
    assert train.real and "MNIST" in train.source
    assert train.images.shape[1:] == (1, 28, 28)
    assert set(train.labels.unique().tolist()) == set(range(10))
    # no image is in both splits
    assert len(train) + len(test) in (5_000, 70_000)


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
def test_balanced_subset(fashion_small, per_class, seed):
    train, _ = fashion_small
    sub = data.balanced_subset(train, per_class, seed=seed)
    assert torch.bincount(sub.labels, minlength=10).tolist() == [per_class] * 10
    again = data.balanced_subset(train, per_class, seed=seed)
    assert torch.equal(sub.images, again.images)
    with pytest.raises(ValueError, match="fewer than"):
        data.balanced_subset(train, 21)


def test_select_classes_relabels(fashion_small):
    train, _ = fashion_small
    part = train.select_classes([7, 2])
    assert part.classes == ["Sneaker", "Pullover"]
    assert set(part.labels.tolist()) == {0, 1} and len(part) == 40


def test_batch_transform_matches_model_preprocessing():
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    t = data.BatchTransform.for_model("efficientnet_lite0", size=64, channels=3)
    out = t(images)
    assert out.shape == (4, 3, 64, 64) and out.dtype == torch.float32
    assert torch.allclose(out[:, 0], out[:, 2])  # grey repeated
    assert out.min() >= -1.0 - 1e-5 and out.max() <= 1.0 + 1e-5  # mean = std = 0.5


def test_augment_changes_training_batches_only():
    x = torch.rand(8, 3, 32, 32)
    aug = data.Augment(flip=1.0)
    flipped = aug(x)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
    t = data.BatchTransform(32, (0.0,) * 3, (1.0,) * 3, augment=aug)
    t.eval()
    assert torch.allclose(t(x), x)


def test_array_loader_covers_everything_once(fashion_small):
    train, _ = fashion_small
    loader = data.make_loader(train, 64, shuffle=True, seed=3)
    labels = torch.cat([y for _, y in loader])
    assert len(loader) == 4 and len(labels) == 200
    assert torch.equal(labels.sort().values, train.labels.sort().values)


def test_image_folder_checks(photo_folder, tmp_path_factory):
    classes, bad = data.check_image_folder(photo_folder)
    assert classes == ["chelsea", "coffee"] and bad == []
    (photo_folder / "coffee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (photo_folder / "coffee" / "notes.txt").write_text("hello")
    classes, bad = data.check_image_folder(photo_folder)
    assert {f.name for f, _ in bad} == {"broken.png", "notes.txt"}
    ds = data.image_folder(photo_folder, report=False)
    assert len(ds) == 12 and ds.classes == ["chelsea", "coffee"]


def test_image_folder_errors(tmp_path):
    with pytest.raises(ImageFolderError, match="does not exist"):
        data.check_image_folder(tmp_path / "nope")
    with pytest.raises(ImageFolderError, match="no images found"):
        data.check_image_folder(tmp_path)
    (tmp_path / "only").mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(ImageFolderError, match="only one class"):
        data.check_image_folder(tmp_path)
