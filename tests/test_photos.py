"""companion.photos: Tux Paint's stamp photographs, selected, composited on white, split and
written as a torchvision ImageFolder."""

import contextlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
import torchvision
from hypothesis import given, settings
from marks import real_data
from PIL import Image

from companion import photos, provenance
from companion.errors import DatasetUnavailableError, ImageFolderError

needs_stamps = real_data(
    photos.DEBIAN_STAMPS.is_dir(),
    f"needs Tux Paint's stamps (apt-get install tuxpaint-stamps-default, which fills {photos.DEBIAN_STAMPS})",
)
SPLITS = ("train", "val", "test")
CLASS_NAMES = ["bird", "fish", "flower", "fruit", "mammal", "vegetable"]


def _noise(seed: int, size=(24, 20)) -> Image.Image:
    """An opaque RGBA image of random colours: a 'photograph' by the colour rule."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return Image.fromarray(pixels, "RGBA")


def _files(root: Path, split: str) -> dict[str, set[str]]:
    """``{class: {file names}}`` of one split of a written folder."""
    return {c.name: {f.name for f in c.iterdir()} for c in sorted((root / split).iterdir())}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The real photo folder, written once with seed 0: ``(root, chosen, printed report)``."""
    tmp = tmp_path_factory.mktemp("photos")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("TLBOOK_STAMPS", raising=False)
        mp.setenv("TLBOOK_DATA", str(tmp / "data"))
        mp.setenv("TLBOOK_OFFLINE", "1")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            root = photos.write_photo_folder(tmp / "out", seed=0)
        chosen = photos.select(photos.DEBIAN_STAMPS)
    return root, chosen, out.getvalue()


@needs_stamps
@pytest.mark.parametrize("split", SPLITS)
def test_written_folder_is_a_plain_image_folder(written, split):
    root, chosen, _ = written
    assert sorted(photos.CLASSES) == CLASS_NAMES
    folder = torchvision.datasets.ImageFolder(root / split)
    assert folder.classes == CLASS_NAMES
    assert len(folder) > 0 and set(folder.targets) == set(range(len(CLASS_NAMES)))
    for path, _ in folder.samples:
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.width == image.height


@needs_stamps
def test_splits_are_disjoint_complete_and_stratified(written):
    root, chosen, _ = written
    files = {split: _files(root, split) for split in SPLITS}
    for name, (kept, _) in chosen.items():
        train, val, test = (files[split].get(name, set()) for split in SPLITS)
        assert not train & val and not train & test and not val & test
        assert train | val | test == {f"{path.stem}.png" for path in kept}
        assert train and val and test
        expected = max(1, round(0.2 * len(kept)))
        assert (len(val), len(test)) == (expected, expected)
        assert len(train) == len(kept) - 2 * expected
    manifest = json.loads((root / photos.MANIFEST).read_text())
    assert manifest["seed"] == 0 and manifest["classes"] == list(photos.CLASSES)
    assert manifest["splits"] == {s: sum(map(len, files[s].values())) for s in SPLITS}


@needs_stamps
def test_split_depends_on_the_seed_only(written, tmp_path, monkeypatch, capsys):
    root, chosen, _ = written
    files = [path for kept, _ in chosen.values() for path in kept]
    labels = [c for c, (kept, _) in enumerate(chosen.values()) for _ in kept]
    # the same seed gives the same split: the one written with seed 0
    for split, indices in zip(SPLITS, photos.split_indices(labels, 0)):
        expected = {(list(chosen)[labels[i]], f"{files[i].stem}.png") for i in indices}
        assert {(c, f) for c, names in _files(root, split).items() for f in names} == expected
    assert all(
        (a == b).all() for a, b in zip(photos.split_indices(labels, 0), photos.split_indices(labels, 0), strict=True)
    )
    # another seed gives another split
    monkeypatch.delenv("TLBOOK_STAMPS", raising=False)
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    other = photos.write_photo_folder(tmp_path / "seed1", seed=1)
    assert _files(other, "test") != _files(root, "test")
    assert {s: sum(map(len, _files(other, s).values())) for s in SPLITS} == {
        s: sum(map(len, _files(root, s).values())) for s in SPLITS
    }
    assert "[photos]" in capsys.readouterr().out


@needs_stamps
def test_report_names_each_class_and_the_source(written):
    root, chosen, report = written
    lines = [line for line in report.splitlines() if line.startswith("[photos]")]
    assert len(lines) == len(photos.CLASSES)
    for name, line in zip(photos.CLASSES, lines):
        assert f" {name}: {len(chosen[name][0])} photographs kept" in line
    assert "tuxpaint-stamps-default" in report
    assert "tuxpaint-stamps-default" in provenance.sources()["data tuxpaint_photos"]


@needs_stamps
@pytest.mark.parametrize(
    ("stamp", "photograph"),
    [
        ("animals/mammals/apes/chimp.png", True),
        ("animals/birds/peacock.png", True),
        ("animals/mammals/echidna.png", False),  # a one-colour silhouette
        ("animals/mammals/hedgehog.png", False),  # a cartoon
    ],
)
def test_photograph_rule_on_real_stamps(stamp, photograph):
    with Image.open(photos.DEBIAN_STAMPS / stamp) as image:
        assert bool(photos.is_photograph(image)) is photograph


def test_photograph_rule_on_synthetic_images():
    drawing = np.zeros((40, 40, 4), np.uint8)
    drawing[..., 3] = 255
    drawing[:, :20, :3] = (200, 30, 30)
    drawing[:, 20:, :3] = (30, 30, 200)
    assert not photos.is_photograph(Image.fromarray(drawing, "RGBA"))

    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    assert photos.is_photograph(Image.fromarray(noise, "RGBA"))
    noise[..., 3] = 0
    assert not photos.is_photograph(Image.fromarray(noise, "RGBA"))  # fully transparent

    # 200 colours distinct at 5 bits per channel: one covering 60% is refused, spread evenly accepted
    palette = np.array([(8 * (i % 32), 8 * (i // 32), 128) for i in range(200)], np.uint8)
    dominated = np.concatenate([np.zeros(6000, int), 1 + np.arange(4000) % 199])
    even = np.arange(10_000) % 200
    for indices, photograph in ((dominated, False), (even, True)):
        rgb = palette[indices].reshape(100, 100, 3)
        assert len(np.unique(indices)) == 200
        assert bool(photos.is_photograph(Image.fromarray(rgb, "RGB"))) is photograph


def test_on_white_square_pads_and_centres():
    pixels = np.zeros((10, 30, 4), np.uint8)
    pixels[:, :15] = (255, 0, 0, 0)  # transparent red: must come out white
    pixels[:, 15:, :3] = np.random.default_rng(0).integers(0, 200, (10, 15, 3))
    pixels[:, 15:, 3] = 255
    square = photos.on_white_square(Image.fromarray(pixels, "RGBA"))
    assert square.mode == "RGB" and square.size == (30, 30)
    out = np.asarray(square)
    assert (out[10:20, 15:] == pixels[:, 15:, :3]).all()  # opaque pixels unchanged, centred
    white = np.ones((30, 30), bool)
    white[10:20, 15:] = False
    assert (out[white] == 255).all()


def test_split_indices_is_stratified():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 3 + [0] * 7)  # 17, 5 and 3 images
    train, val, test = photos.split_indices(labels, seed=3)
    for part in (train, val, test):
        assert part.dtype == np.int64 and (np.diff(part) > 0).all()
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(len(labels)))
    assert np.bincount(labels[val]).tolist() == [3, 1, 1]
    assert np.bincount(labels[test]).tolist() == [3, 1, 1]
    assert np.bincount(labels[train]).tolist() == [11, 3, 1]
    with pytest.raises(ValueError, match="class 1 has 2 images"):
        photos.split_indices([0, 0, 0, 1, 1], seed=0)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(3, 40), min_size=1, max_size=6), seed=st.integers(0, 2**32 - 1))
def test_split_indices_partitions_any_labels(sizes, seed):
    labels = np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)), sizes))
    parts = photos.split_indices(labels.tolist(), seed)
    assert sum(map(len, parts)) == len(labels)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    for c, n in enumerate(sizes):
        assert [int((labels[p] == c).sum()) for p in parts[1:]] == [max(1, round(0.2 * n))] * 2


def _no_download(*args):
    raise AssertionError("find_stamps downloaded")


@pytest.fixture()
def no_stamps(monkeypatch, tmp_path):
    """No TLBOOK_STAMPS, no Debian package, an empty data folder; returns the data folder."""
    monkeypatch.delenv("TLBOOK_STAMPS", raising=False)
    monkeypatch.setattr(photos, "DEBIAN_STAMPS", tmp_path / "missing")
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(photos.urllib.request, "urlretrieve", _no_download)
    return tmp_path / "data"


def test_find_stamps_prefers_tlbook_stamps(monkeypatch, tmp_path):
    (tmp_path / "debian").mkdir()
    monkeypatch.setattr(photos, "DEBIAN_STAMPS", tmp_path / "debian")
    monkeypatch.setenv("TLBOOK_STAMPS", str(tmp_path / "mine"))
    assert photos.find_stamps() == (tmp_path / "mine", "TLBOOK_STAMPS")
    monkeypatch.delenv("TLBOOK_STAMPS")
    assert photos.find_stamps()[0] == tmp_path / "debian"


def test_find_stamps_offline_names_both_fixes(no_stamps, monkeypatch):
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError) as error:
        photos.find_stamps()
    assert "apt-get install tuxpaint-stamps-default" in str(error.value)
    assert photos.UPSTREAM_URL in str(error.value)


def test_find_stamps_finds_an_earlier_download(no_stamps, monkeypatch):
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    cached = no_stamps / f"tuxpaint-stamps-{photos.UPSTREAM_VERSION}" / "stamps"
    cached.mkdir(parents=True)
    folder, origin = photos.find_stamps()
    assert folder == cached and photos.UPSTREAM_VERSION in origin


def _tarball(path: Path, member: str) -> Path:
    """A gzipped tarball holding one PNG at ``member``."""
    source = path.parent / "src"
    (source / member).parent.mkdir(parents=True)
    _noise(0).save(source / member)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source / member.split("/")[0], arcname=member.split("/")[0])
    shutil.rmtree(source)
    return path


def test_unpack_stamps(tmp_path):
    archive = _tarball(tmp_path / "in" / "stamps.tar.gz", "tuxpaint-stamps-X/stamps/animals/birds/a.png")
    (tmp_path / "cache").mkdir()
    stamps = photos.unpack_stamps(archive, tmp_path / "cache" / "target")
    assert stamps == tmp_path / "cache" / "target" / "stamps"
    with Image.open(stamps / "animals/birds/a.png") as image:
        assert np.array_equal(np.asarray(image), np.asarray(_noise(0)))
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["target"]  # no temporary folder left


def test_unpack_stamps_refuses_a_tarball_without_stamps(tmp_path):
    archive = _tarball(tmp_path / "in" / "other.tar.gz", "something-else/pictures/a.png")
    with pytest.raises(DatasetUnavailableError, match="no stamps/ folder"):
        photos.unpack_stamps(archive, tmp_path / "target")
    assert not (tmp_path / "target" / "stamps").exists()


def test_find_stamps_downloads_once(no_stamps, monkeypatch, tmp_path):
    archive = _tarball(tmp_path / "upstream" / "stamps.tar.gz", "tuxpaint-stamps-X/stamps/animals/birds/a.png")
    calls = []

    def fake_urlretrieve(url, filename):
        calls.append(url)
        shutil.copy(archive, filename)

    monkeypatch.setattr(photos.urllib.request, "urlretrieve", fake_urlretrieve)
    monkeypatch.setenv("TLBOOK_OFFLINE", "0")
    cached = no_stamps / f"tuxpaint-stamps-{photos.UPSTREAM_VERSION}" / "stamps"
    folder, origin = photos.find_stamps()
    assert folder == cached and (folder / "animals/birds/a.png").is_file()
    assert calls == [photos.UPSTREAM_URL] and "release tarball" in origin
    assert photos.find_stamps()[0] == cached
    assert calls == [photos.UPSTREAM_URL]  # not downloaded again


@pytest.fixture()
def synthetic_stamps(monkeypatch, tmp_path):
    """A small stamps tree, 4 noise photographs per class folder, as TLBOOK_STAMPS."""
    stamps = tmp_path / "stamps"
    for c, folders in enumerate(photos.CLASSES.values()):
        for folder in folders:
            (stamps / folder).mkdir(parents=True)
            for i in range(4):
                _noise(10 * c + i).save(stamps / folder / f"s{i}.png")
    monkeypatch.setenv("TLBOOK_STAMPS", str(stamps))
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    return stamps


def test_write_refuses_a_folder_it_did_not_write(synthetic_stamps, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ImageFolderError, match="not a photo folder"):
        photos.write_photo_folder(mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"

    a_file = tmp_path / "a_file"
    a_file.write_text("keep me too")
    with pytest.raises(ImageFolderError):
        photos.write_photo_folder(a_file)
    assert a_file.read_text() == "keep me too"


def test_write_replaces_its_own_folder(synthetic_stamps, tmp_path, capsys):
    root = photos.write_photo_folder(tmp_path / "out", seed=0)
    (root / "train" / "stray.txt").write_text("left from before")
    assert photos.write_photo_folder(tmp_path / "out", seed=5) == root
    assert not (root / "train" / "stray.txt").exists()
    assert json.loads((root / photos.MANIFEST).read_text())["seed"] == 5
    assert "TLBOOK_STAMPS" in json.loads((root / photos.MANIFEST).read_text())["source"]
    for split, n in zip(SPLITS, (2, 1, 1)):
        folder = torchvision.datasets.ImageFolder(root / split)
        assert folder.classes == CLASS_NAMES
        assert np.bincount(folder.targets).tolist() == [n] * len(CLASS_NAMES)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("tmp")] == []  # no temporary folder left
    assert capsys.readouterr().out.count("[photos]") == 2 * len(CLASS_NAMES)
