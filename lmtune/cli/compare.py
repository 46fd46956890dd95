"""Compare runs: `python -m lmtune.cli.compare [EXP ...] [--all] [--against NAME]` (make compare).

Default runs: the workspace, HEAD and every experiment of HEAD (as `dvc exp show`); EXP names or revs
pick some (from any commit); --all takes every commit's. Prints a table that fits 100 columns and writes
reports/compare.html (self-contained), compare.txt, compare.json and every chart as PNG and SVG.
The rooms behind it, in lmtune/report: runs (reading runs from DVC), analysis (ranking, intervals,
verdicts, notes; the statistics are lmtune/stats.py), table (the text), charts and page (the files).
"""
import argparse
import shutil
from pathlib import Path

from lmtune import paths
from lmtune.errors import cli
from lmtune.report import analysis, charts, page, runs, table


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lmtune.cli.compare", description=__doc__.split("\n")[0])
    ap.add_argument("exps", nargs="*", metavar="EXP", help="experiment names, branches or commits (default: "
                    "the workspace, HEAD and every experiment of HEAD)")
    ap.add_argument("--all", action="store_true", help="every commit's runs (dvc exp show --all-commits)")
    ap.add_argument("--against", metavar="NAME", help="the baseline run each verdict compares with (default: the "
                    "best, with each verdict's level corrected for the best having been picked)")
    ap.add_argument("--width", type=int, default=None, help="table width (default: the terminal's, at most 100)")
    ap.add_argument("--out", type=Path, default=paths.REPORTS, help="report folder (default: reports/)")
    args = ap.parse_args(argv)
    width = args.width or min(table.WIDTH, shutil.get_terminal_size((table.WIDTH, 24)).columns)
    found, skipped = runs.collect(args.exps, args.all)
    report = analysis.analyse(found, skipped, against=args.against)
    specs = charts.charts(report)  # may add a note (curves DVC could not give), so before the text
    files = page.write_reports(report, specs, table.render_text(report, table.WIDTH), args.out)
    print(table.render_text(report, width), end="")
    print(f"\nreport: {files[0]} (charts as PNG and SVG beside it)")


if __name__ == "__main__":
    main()
