"""``python -m bench``: run a bench case, list the cases, or write the results report.

See :mod:`bench` for the cases, the files written and the naming of the results.
"""

from __future__ import annotations

import argparse
import sys

from bench import CASES, ISSUE, PLANNED, PlannedCaseError, run


def list_cases() -> str:
    """The ``--list`` text: available cases, then planned ones."""
    width = max(map(len, [*CASES, *PLANNED]))
    lines = ["available:"] + [f"  {c.name:<{width}}  {c.summary}" for c in CASES.values()]
    if PLANNED:
        lines += [f"planned ({ISSUE}, not available yet):"] + [f"  {k:<{width}}  {v}" for k, v in PLANNED.items()]
    return "\n".join(lines)


def _run_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run a bench case (writes DIR/results.json and DIR/samples.npz). "
                    "`python -m bench report DIR... --out FILE.md` turns results into a markdown table.",
        epilog=list_cases(), formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("case", nargs="?", help="the case to run (see --list)")
    ap.add_argument("--list", action="store_true", help="print the cases and whether each is available")
    ap.add_argument("--profile", default="standard", choices=["smoke", "standard", "full"], help="run size")
    ap.add_argument("--seed", type=int, default=0, help="seed of every generator and initialisation (default 0)")
    ap.add_argument("--out", default=None, help="output folder (default bench/out/CASE-PROFILE)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default TUTORLIB_THREADS, else all cores)")
    ap.add_argument("--datasets", default=None,
                    help="comma-separated subset of the case's datasets (cases that take one, e.g. ttq2d)")
    ap.add_argument("--device", default=None, help="torch device (default TUTORLIB_DEVICE, else cuda/mps/cpu)")
    return ap


def _report_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench report",
                                 description="Turn results.json files into a markdown report.")
    ap.add_argument("inputs", nargs="+", help="result folders (holding results.json) or results.json files")
    ap.add_argument("--out", default=None, help="markdown file to write (default: print)")
    ap.add_argument("--readme", default=None,
                    help="also rewrite the short summary between the bench-summary markers of this file (README.md)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        from bench.report import load_results, readme_summary, update_readme, write_report

        args = _report_parser().parse_args(argv[1:])
        text = write_report(args.inputs, args.out)
        if args.readme is not None:
            update_readme(args.readme, readme_summary(load_results(args.inputs)))
            print(f"updated the bench summary in {args.readme}", file=sys.stderr)
        if args.out is None:
            print(text)
        else:
            print(f"wrote {args.out}", file=sys.stderr)
        return 0
    ap = _run_parser()
    args = ap.parse_args(argv)
    if args.list:
        print(list_cases())
        return 0
    if not args.case:
        ap.error("name a case (or --list, or `report`)")
    from tutorlib.device import set_threads

    set_threads(args.threads)
    try:
        datasets = tuple(args.datasets.split(",")) if args.datasets else None
        run(args.case, args.profile, args.seed, args.out, args.device, datasets)
    except PlannedCaseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
