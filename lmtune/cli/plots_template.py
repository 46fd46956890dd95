"""Write the offline page for `dvc plots show` / `dvc plots diff`: `python -m lmtune.cli.plots_template [DEST]`.

`make install` runs it (DEST: .dvc/offline_plots.html, which `.dvc/config` names); lmtune/report/vega.py
builds the page.
"""
import sys
from pathlib import Path

from lmtune import paths
from lmtune.io import atomic_write_text
from lmtune.report import vega


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    dest = Path(args[0]) if args else paths.PLOTS_TEMPLATE
    atomic_write_text(dest, vega.render())
    print(f"wrote {dest} (dvc plots show/diff render offline with it)")


if __name__ == "__main__":
    main()
