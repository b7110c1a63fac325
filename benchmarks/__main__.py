"""`make bench`: run every benchmark and write benchmarks/results.json.

``python -m benchmarks [name ...]`` runs only the named ones (cached_features, fit_vs_naive,
book_smoke, gpu). Each is imported only when chosen, so ``gpu`` runs where jupytext and nbclient
(needed by ``book_smoke`` alone) are not installed.
"""

import importlib
import sys

from . import results_io

BENCHMARKS = ("cached_features", "fit_vs_naive", "book_smoke", "gpu")

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(BENCHMARKS)
    unknown = [c for c in chosen if c not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    for name in chosen:
        print(f"== {name}")
        figures = importlib.import_module(f"benchmarks.{name}").run()
        results_io.update(figures)  # after each, so a later failure loses nothing
    print(f"written to {results_io.RESULTS}")
    from edition.times import update_readme  # the README's table of chapter times comes from these figures

    update_readme()
