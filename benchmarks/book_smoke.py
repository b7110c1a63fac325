"""book_smoke_seconds: executing every chapter, each in a fresh kernel, in the ``smoke`` profile
(all but the performance appendix, which displays these figures).

The chapters are read from ``book/`` with jupytext and run with nbclient (what nbval and the book
build do), errors fatal. Features cached on disk by an earlier run are part of the normal
experience of a reader re-running a chapter; the first ever run is slower by their extraction.
"""

from __future__ import annotations

import os
import time

from nbclient import NotebookClient

FIGURES = ("book_smoke_seconds", "book_smoke_seconds_per_chapter")


def run(partial=None) -> dict:
    from edition.chapters import chapters, read_notebook

    os.environ.update(TLBOOK_PROFILE="smoke", TLBOOK_PROGRESS="0")
    seconds = {}
    for md in chapters():
        if md.stem == "performance":  # the appendix only displays these figures
            continue
        nb = read_notebook(md)
        t0 = time.perf_counter()
        NotebookClient(
            nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(md.parent)}}
        ).execute()
        seconds[md.stem] = round(time.perf_counter() - t0, 1)
        print(f"{md.stem:24s} {seconds[md.stem]:6.1f} s")
        if partial is not None:
            partial({"book_smoke_seconds_per_chapter": dict(seconds)}, f"cut short: {len(seconds)} chapters so far")
    total = round(sum(seconds.values()), 1)
    print(f"{'all chapters':24s} {total:6.1f} s")
    return {"book_smoke_seconds": total, "book_smoke_seconds_per_chapter": seconds}


if __name__ == "__main__":
    run()
