"""Writing benchmark figures to benchmarks/results.json with the hardware and versions they were measured on."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results.json"


def environment() -> dict:
    """Hardware, versions and date of this run."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "gpu": gpu,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def update(figures: dict) -> dict:
    """Merge ``figures`` into results.json (atomically) and return the whole file's content.

    The machine they were measured on goes with them: ``gpu_environment`` for the GPU
    benchmark's figures (they carry ``gpu_name``), ``environment`` for the others, so a GPU run
    does not relabel CPU figures measured elsewhere, nor the other way round.
    """
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not figures:
        return current
    current.update(figures)
    current["gpu_environment" if "gpu_name" in figures else "environment"] = environment()
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2) + "\n")
    os.replace(tmp, RESULTS)
    return current
