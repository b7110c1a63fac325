"""`make bench`: run every benchmark and write its entry of benchmarks/results.json.

``python -m benchmarks [name ...]`` runs only the named ones (cached_features, fit_vs_naive,
book_smoke, gpu). Each entry is replaced whole by the run that measures it, with the command,
date, device and versions (:func:`benchmarks.results_io.record`); a benchmark this machine
cannot run (``gpu`` without CUDA) leaves its entry, with its own provenance, as it was. Each is
imported only when chosen, so ``gpu`` runs where jupytext and nbclient (needed by
``book_smoke`` alone) are not installed.
"""

import importlib
import sys

from . import results_io

BENCHMARKS = (
    "cached_features",
    "fit_vs_naive",
    "channels_last",
    "inference_batch",
    "peers",
    "book_smoke",
    "gpu",
    "full_size",
)


def main(chosen: list[str]) -> int:
    unknown = [c for c in chosen if c not in BENCHMARKS]
    if unknown:
        print(f"error: unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"== {name}")
        module = importlib.import_module(f"benchmarks.{name}")
        command = f"python -m benchmarks {name}"

        def partial(figures: dict, note: str, name=name, command=command) -> None:
            results_io.record("benchmarks", (name,), figures, command, complete=False, note=note)

        figures = module.run(partial=partial)
        if figures:  # written after each benchmark, so a later failure loses nothing
            results_io.record("benchmarks", (name,), figures, command)
    print(f"written to {results_io.RESULTS}")
    from edition.times import update_readme  # the README's table of chapter times comes from these figures

    update_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(BENCHMARKS)))
