"""Every file the companion writes or reads back (companion.files): atomic writes, checkpoints
and finished models that are damaged in any way, and the lock on a run folder."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from marks import real_data
from PIL import Image

from companion import cli, data, files, models
from companion.errors import CheckpointError, CompanionError

DAMAGED = settings(max_examples=50, deadline=None)


needs_debian_fashion_mnist = real_data(
    data.DEBIAN_FASHION_MNIST.is_dir(),
    f"needs apt-get install dataset-fashion-mnist, which fills {data.DEBIAN_FASHION_MNIST}",
)

# 4,000 random bytes from these seeds: seed 2 made torch's unpickler raise IndexError ("pop from
# empty list"), which load_checkpoint let through when it caught only UnpicklingError,
# RuntimeError, EOFError and OSError.
RANDOM_FILES = [random.Random(seed).randbytes(4000) for seed in range(8)]


def _rejected(read, path: Path) -> CheckpointError | None:
    """The CheckpointError that ``read(path)`` raises (``None`` if it reads the file). Any other
    exception propagates, and fails the test that calls this."""
    try:
        read(path)
    except CheckpointError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)  # names the file, on one line
        return exc
    return None


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory) -> bytes:
    """A real checkpoint, as ``fit`` writes one: weights, an epoch, a history, optimiser state."""
    model = models.create("simple_cnn", num_classes=3)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    path = tmp_path_factory.mktemp("real") / "checkpoint.pt"
    files.save_checkpoint(
        path, model, epoch=1, history=[{"epoch": 1, "train_loss": 0.5}], optimizer=optimizer.state_dict()
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory) -> bytes:
    """A real finished model file (safetensors), as ``train`` writes one."""
    path = tmp_path_factory.mktemp("real") / "model.safetensors"
    config = {"model": "simple_cnn", "classes": ["a", "b", "c"], "image_size": 32}
    files.save_model(path, models.create("simple_cnn", num_classes=3), config)
    return path.read_bytes()


def _write(tmp_path_factory, name: str, payload: bytes) -> Path:
    path = tmp_path_factory.mktemp("damaged") / name
    path.write_bytes(payload)
    return path


def _flip(payload: bytes, flips: list[tuple[int, int]]) -> bytes:
    """``payload`` with the byte at each ``position % len`` XORed with a non-zero ``mask``."""
    damaged = bytearray(payload)
    for position, mask in flips:
        damaged[position % len(damaged)] ^= mask
    return bytes(damaged)


FLIPS = st.lists(st.tuples(st.integers(0, 2**31), st.integers(1, 255)), min_size=1, max_size=8)


@pytest.fixture(scope="module", params=["checkpoint", "model file"])
def real_file(request, checkpoint_bytes, model_bytes):
    """``(reader, file name, bytes)`` of a real checkpoint and of a real finished model file."""
    if request.param == "checkpoint":
        return files.load_checkpoint, "c.pt", checkpoint_bytes
    return files.read_model, "m.safetensors", model_bytes


@DAMAGED
@given(payload=st.binary(max_size=5000))
def test_random_bytes_are_never_a_checkpoint_or_model_file(tmp_path_factory, real_file, payload: bytes):
    # Random bytes never hold a companion checkpoint or model file: always refused.
    read, name, _ = real_file
    assert _rejected(read, _write(tmp_path_factory, name, payload)) is not None


@DAMAGED
@given(cut=st.floats(0, 1, exclude_max=True))
def test_a_truncated_file_is_a_checkpoint_error(tmp_path_factory, real_file, cut: float):
    read, name, payload = real_file
    assert _rejected(read, _write(tmp_path_factory, name, payload[: int(cut * len(payload))])) is not None


@DAMAGED
@given(flips=FLIPS)
def test_a_file_with_flipped_bytes_loads_or_is_a_checkpoint_error(tmp_path_factory, real_file, flips):
    # A flip inside the tensor data may leave a loadable file (other weights): both outcomes are
    # fine, any exception other than CheckpointError is not.
    read, name, payload = real_file
    _rejected(read, _write(tmp_path_factory, name, _flip(payload, flips)))


# ----------------------------------------------------------------------------- checkpoints


def test_the_real_checkpoint_loads(tmp_path_factory, checkpoint_bytes):
    """The property tests below start from this file: it must load, or they would prove nothing."""
    ckpt = files.load_checkpoint(_write(tmp_path_factory, "c.pt", checkpoint_bytes))
    assert ckpt["epoch"] == 1 and set(ckpt["model"]) == set(models.create("simple_cnn", num_classes=3).state_dict())


@pytest.mark.parametrize("seed", range(len(RANDOM_FILES)))
def test_random_bytes_of_a_few_thousand_are_a_checkpoint_error(tmp_path: Path, seed: int):
    path = tmp_path / "model.pt"
    path.write_bytes(RANDOM_FILES[seed])
    with pytest.raises(CheckpointError, match=r"is truncated or corrupt .*: not a PyTorch checkpoint") as refused:
        files.load_checkpoint(path)
    assert str(path) in str(refused.value)


def test_a_missing_checkpoint_and_a_pickled_object_are_checkpoint_errors(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        files.load_checkpoint(tmp_path / "absent.pt")
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # a whole module, not its weights
    with pytest.raises(CheckpointError, match=r"refused to load .*torch\.nn\.modules\.linear\.Linear.*arbitrary code"):
        files.load_checkpoint(tmp_path / "pickled.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is not a companion checkpoint"):
        files.load_checkpoint(tmp_path / "other.pt")


# ----------------------------------------------------------------------------- finished models


def test_the_real_model_file_reads(tmp_path_factory, model_bytes):
    state, config = files.read_model(_write(tmp_path_factory, "m.safetensors", model_bytes))
    assert config["classes"] == ["a", "b", "c"] and state.keys() == models.create("simple_cnn").state_dict().keys()


@pytest.mark.parametrize("seed", range(len(RANDOM_FILES)))
def test_random_bytes_of_a_few_thousand_are_not_a_model_file(tmp_path: Path, seed: int):
    path = tmp_path / "model.safetensors"
    path.write_bytes(RANDOM_FILES[seed])
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        files.read_model(path)


def test_a_model_file_without_the_companions_config_is_refused(tmp_path: Path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="has no run configuration in its metadata"):
        files.read_model(tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="no model file at"):
        files.read_model(tmp_path / "absent.safetensors")


@pytest.mark.parametrize("seed", [2, 5])  # 2: the bytes that raised IndexError
def test_predict_with_a_random_model_pt_is_one_error_line_and_status_2(tmp_path: Path, capsys, seed: int):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(RANDOM_FILES[seed])  # an old run folder: model.pt, no model.safetensors
    image = tmp_path / "cat.png"
    Image.new("RGB", (40, 40), (200, 120, 40)).save(image)
    assert cli.main(["predict", str(run), str(image)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.count("error:") == 1 and err.endswith("\n") and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {run / 'model.pt'} is truncated or corrupt")


# ----------------------------------------------------------------------------- atomic writes


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("interruption", [OSError("No space left on device"), KeyboardInterrupt()])
def test_a_failing_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path, interruption):
    target = tmp_path / "metrics.json"
    files.write_json(target, {"epoch": 1})

    def fail(f):
        f.write(b'{"epoch": 2, "half')  # half of the new file, then the disk is full (or Ctrl-C)
        raise interruption

    with pytest.raises(type(interruption)):
        files.atomic_write(target, fail)
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert _listing(tmp_path) == ["metrics.json"]  # no temporary file left behind
    with pytest.raises(type(interruption)):
        files.atomic_write(tmp_path / "new.bin", fail)  # a first write that fails leaves nothing at all
    assert _listing(tmp_path) == ["metrics.json"]


def test_atomic_write_renames_a_complete_temporary_in_the_same_folder(tmp_path: Path, monkeypatch):
    """Two writers of the same path never share a temporary name, and each temporary lies next to
    the target (a rename across file systems would not be atomic) and is complete when renamed."""
    replaced, replace = [], os.replace

    def record(src, dst):
        replaced.append((Path(src), Path(dst), Path(src).read_bytes()))
        replace(src, dst)

    monkeypatch.setattr(files.os, "replace", record)
    target = tmp_path / "sub" / "model.safetensors"  # missing folders are created
    assert files.write_bytes(target, b"first") == target
    files.write_bytes(target, b"second")
    assert target.read_bytes() == b"second" and _listing(target.parent) == ["model.safetensors"]
    (first, dst1, body1), (second, dst2, body2) = replaced
    assert dst1 == dst2 == target and first != second
    assert first.parent == second.parent == target.parent and first.name.startswith(".model.safetensors.")
    assert (body1, body2) == (b"first", b"second")


def test_write_json_is_indented_with_a_final_newline(tmp_path: Path):
    files.write_json(tmp_path / "c.json", {"b": [1, 2], "a": "é"})
    assert (tmp_path / "c.json").read_text() == json.dumps({"b": [1, 2], "a": "é"}, indent=2) + "\n"


@needs_debian_fashion_mnist
def test_fashion_mnist_is_unpacked_with_atomic_writes_under_names_of_its_own(tmp_path: Path, monkeypatch):
    """Two processes that unpack the Debian copy into the same data folder (two chapters started
    at once) must not write through one temporary file: each file goes through
    files.atomic_write, whose temporary names are unique, and none is left behind."""
    replaced, replace = [], os.replace

    def record(src, dst):
        replaced.append((Path(src), Path(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", record)  # the one os module, whatever name a caller uses
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path))
    monkeypatch.setenv("TLBOOK_OFFLINE", "1")
    raw = tmp_path / "FashionMNIST" / "raw"
    names = sorted(gz.stem for gz in data.DEBIAN_FASHION_MNIST.glob("*-ubyte.gz"))
    temporaries = {}
    for _ in range(2):  # unpack twice into the same paths
        for name in names:
            (raw / name).unlink(missing_ok=True)
        data._fashion_mnist("test")
        assert sorted(p.name for p in raw.iterdir()) == sorted([*names, "ORIGIN"])  # no temporary left
        for src, dst in replaced:
            temporaries.setdefault(dst.name, []).append(src.name)
        replaced.clear()
    for name in names:
        first, second = temporaries[name]
        assert first != second, f"{name} was unpacked twice through the same temporary file {first}"
        assert first.startswith(f".{name}.")  # files.atomic_write's temporaries


# ----------------------------------------------------------------------------- run folder locks


def test_a_folder_is_locked_once_until_released(tmp_path: Path):
    held = files.lock_folder(tmp_path)
    try:
        with pytest.raises(CompanionError, match=rf"another `train` is writing to {tmp_path}\. Fix: wait"):
            files.lock_folder(tmp_path)
        with pytest.raises(CompanionError, match=rf"^a notebook is writing to {tmp_path}"):
            files.lock_folder(tmp_path, what="a notebook")
    finally:
        held.release()
    again = files.lock_folder(tmp_path)  # free again after release
    assert again.is_locked
    again.release()
    assert not again.is_locked
