"""``python -m edition``: the reference edition from the command line.

python -m edition run [CHAPTER ...] [--profile NAME] [--timeout S]   (make reference)
python -m edition run --stale                                        (make reference-stale)
python -m edition status                                             (make reference-status)
python -m edition times                      (README's table of measured chapter times)
"""

from __future__ import annotations

import argparse
import sys

from . import chapters as chapters_mod
from . import store
from .status import chapter_status


def _pick(names: list[str]) -> list:
    found = {chapters_mod.chapter_id(md): md for md in chapters_mod.chapters()}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise SystemExit(f"unknown chapter {', '.join(unknown)}; choose from {', '.join(found)}")
    return [found[name] for name in names] if names else list(found.values())


def _status() -> int:
    problems = 0
    for md in chapters_mod.chapters():
        try:
            st = chapter_status(md)
        except store.ReferenceError as exc:
            print(f"{chapters_mod.chapter_id(md):22s} unreadable: {exc}")
            problems += 1
            continue
        where = f"{st.provenance['profile']} on {st.provenance['gpu'] or 'CPU'}" if st.provenance else "-"
        note = f"; companion changed: {', '.join(st.changed_companion)}" if st.changed_companion else ""
        print(f"{st.chapter:22s} {st.state:8s} {where:28s} {st.reason}{note}")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edition", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute chapters and store them as the reference edition")
    run_p.add_argument("chapters", nargs="*", help="chapter ids (default: all), e.g. three_modes")
    run_p.add_argument(
        "--profile", help="smoke, quick or full (default: TLBOOK_PROFILE, else full on CUDA, quick elsewhere)"
    )
    run_p.add_argument("--stale", action="store_true", help="only the chapters without a fresh reference")
    run_p.add_argument("--timeout", type=int, default=1800, help="seconds one cell may take (default 1800)")
    sub.add_parser("status", help="fresh, stale or missing, for every chapter")
    sub.add_parser("times", help="rewrite README's table of chapter run times from benchmarks/results.json")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            return _status()
        if args.command == "times":
            from .times import update_readme

            print("README.md: chapter times " + ("updated" if update_readme() else "already current"))
            return 0
        from companion.errors import ProfileError
        from companion.profiles import get_profile

        from .run import run

        if args.timeout <= 0:
            raise SystemExit(f"--timeout must be a positive number of seconds, got {args.timeout}")
        try:
            profile = get_profile(args.profile).name
        except ProfileError as exc:
            raise SystemExit(str(exc)) from None
        chosen = _pick(args.chapters)
        if args.stale:
            chosen = [md for md in chosen if not chapter_status(md).fresh]
            print(f"stale or missing: {', '.join(chapters_mod.chapter_id(md) for md in chosen) or 'none'}")
        return 1 if run(chosen, profile, args.timeout) else 0
    except store.ReferenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"error: {exc.code}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
