"""`make bench`: run every benchmark and write benchmarks/results.json."""

from . import cached_features, results_io

if __name__ == "__main__":
    figures = {}
    figures.update(cached_features.run())
    results = results_io.update(figures)
    print(f"written to {results_io.RESULTS}")
