"""Data-parallel training: the sharding rule, and torchrun with 2 CPU processes (gloo) end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import cli, distributed


def _as_rank(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(distributed, "is_active", lambda: world > 1)
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: world)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 50), world=st.integers(1, 5), shuffle=st.booleans())
def test_shards_cover_every_index_and_training_shards_are_equal(n: int, world: int, shuffle: bool):
    """Evaluation: every index exactly once over all processes. Training: every index at least
    once, every process the same number (padding repeats the start of the order)."""
    mp = pytest.MonkeyPatch()
    shards = []
    try:
        for rank in range(world):
            _as_rank(mp, rank, world)
            sampler = distributed.ShardSampler(n, shuffle, torch.Generator().manual_seed(3))
            shards.append(list(sampler))
            assert len(sampler) == len(shards[-1])
    finally:
        mp.undo()
    everything = sorted(i for s in shards for i in s)
    if shuffle:
        assert len({len(s) for s in shards}) == 1 and set(everything) == set(range(n))
        assert len(everything) == -(-n // world) * world
    else:
        assert everything == list(range(n))


def test_array_loader_shards_the_same_order_on_every_process(monkeypatch):
    """Each process's batches are its slice of one shared shuffled order: together, one epoch."""
    from companion.loaders import ArrayLoader

    x, y = torch.arange(10).float().unsqueeze(1), torch.arange(10)
    seen = []
    for rank in range(2):
        _as_rank(monkeypatch, rank, 2)
        loader = ArrayLoader(x, y, 2, shuffle=True, seed=4)
        assert len(loader) == 3
        seen.append(torch.cat([labels for _, labels in loader]).tolist())
    assert sorted(seen[0] + seen[1]) == list(range(10))
    monkeypatch.undo()
    single = torch.cat([labels for _, labels in ArrayLoader(x, y, 4, shuffle=True, seed=4)]).tolist()
    assert [single[i] for i in range(0, 10, 2)] == seen[0]  # rank 0 takes every other image of the same order


def _torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "TLBOOK_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "companion",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.mark.slow
def test_torchrun_two_processes_match_one_and_resume(photo_folder_large: Path, tmp_path: Path, capsys):
    """2 gloo processes with 4 images each per batch make the same steps as one process with 8:
    the validation accuracy agrees within 0.05, only rank 0 prints and writes, and --resume works."""
    common = [
        str(photo_folder_large),
        "--model",
        "efficientnet_lite0",
        "--mode",
        "feature",
        "--image-size",
        "64",
        "--val-fraction",
        "0.5",
        "--lr",
        "0.01",
        "--device",
        "cpu",
        "--workers",
        "0",
    ]
    single = tmp_path / "single"
    assert cli.main(["train", *common, "--epochs", "4", "--batch-size", "8", "--out", str(single)]) == 0
    one = json.loads((single / "metrics.json").read_text())
    run = tmp_path / "ddp"
    done = _torchrun("train", *common, "--epochs", "3", "--batch-size", "4", "--out", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("validation accuracy") == 1  # printed by rank 0 only
    assert sorted(p.name for p in run.iterdir()) == [
        ".lock",
        "checkpoint.pt",
        "config.json",
        "metrics.json",
        "model.safetensors",
    ]
    resumed = _torchrun("train", *common, "--epochs", "4", "--batch-size", "4", "--out", str(run), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and resumed.stdout.count("epoch   4/4") == 1
    two = json.loads((run / "metrics.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert [r["epoch"] for r in two["history"]] == [1, 2, 3, 4]
    assert two["val_images"] == one["val_images"] == 20  # every validation image counted once
    assert abs(two["val_accuracy"] - one["val_accuracy"]) <= 0.05
    assert two["history"][-1]["train_loss"] == pytest.approx(one["history"][-1]["train_loss"], rel=1e-3)
