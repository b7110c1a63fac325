"""The GPU run of benchmarks/full_size.py, rehearsed on the CPU at a tiny size, from the files
that benchmarks/carry.py would send along (a GPU is lent rarely and briefly: the script must
work the first time)."""

from __future__ import annotations

import pytest

from benchmarks import carry, full_size
from companion import data

pytestmark = pytest.mark.real_data


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_the_dry_run_produces_every_figure_from_the_carried_files(tmp_path, monkeypatch):
    size = carry.build(tmp_path / "carry")
    assert size < carry.LIMIT - 16 * 2**20  # room left for the working tree
    assert any((tmp_path / "carry" / "site" / carry.WEIGHTS_PACKAGE).rglob("*.pth"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-here")
    monkeypatch.setattr(full_size, "CARRIED_FASHION_MNIST", tmp_path / "carry" / "fashion-mnist")
    monkeypatch.setenv("TLBOOK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("TLBOOK_FULL_SIZE_TINY", "1")
    parts = []
    figures = full_size.run(partial=lambda figures, note: parts.append(note))
    assert set(figures) == set(full_size.FIGURES)
    assert len(parts) == 2 and all(note.startswith("cut short") for note in parts)
    assert 0 <= figures["full_size_probe_test_accuracy"] <= 1
    assert len(figures["full_size_fine_tune_test_accuracy"]) == full_size.TINY["epochs"]
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "ORIGIN").exists()  # unpacked from the carried copy


def test_without_a_gpu_the_full_run_is_skipped_and_says_so(capsys, monkeypatch):
    monkeypatch.delenv("TLBOOK_FULL_SIZE_TINY", raising=False)
    monkeypatch.setattr(full_size.hardware, "choose_device", lambda: full_size.torch.device("cpu"))
    assert full_size.run() == {}
    assert "skipped, no CUDA GPU" in capsys.readouterr().out
