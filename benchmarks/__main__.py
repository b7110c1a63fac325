"""`make bench`: run every benchmark and write benchmarks/results.json.

``python -m benchmarks [name ...]`` runs only the named ones (cached_features, fit_vs_naive,
book_smoke, gpu).
"""

import sys

from . import book_smoke, cached_features, fit_vs_naive, gpu, results_io

BENCHMARKS = {"cached_features": cached_features, "fit_vs_naive": fit_vs_naive, "book_smoke": book_smoke, "gpu": gpu}

if __name__ == "__main__":
    chosen = sys.argv[1:] or list(BENCHMARKS)
    unknown = [c for c in chosen if c not in BENCHMARKS]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    for name in chosen:
        print(f"== {name}")
        figures = BENCHMARKS[name].run()
        results_io.update(figures)  # after each, so a later failure loses nothing
    print(f"written to {results_io.RESULTS}")
