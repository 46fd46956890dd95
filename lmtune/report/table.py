"""compare's table as text: at most `width` columns (params move under the table, then columns drop)."""
import textwrap

from lmtune.report.analysis import Report
from lmtune.report.formats import EXTRA, LABELS, fmt_change, fmt_metric, fmt_param

WIDTH = 100
DROP_ORDER = ("tok/s", "train s", "acc", "macro-F1", "vs base")  # the columns left out first when too wide


def short_names(keys: list[str]) -> dict[str, str]:
    """Column names: train.* params (the usual sweeps) without their section, the others in full."""
    return {k: k.removeprefix("train.") for k in keys}


def table(report: Report) -> tuple[list[str], list[list[str]], list[str]]:
    """(headers, cells per row, alignments); the first column marks the best."""
    key = report.key
    extra = {"accuracy": "acc"}.get(EXTRA[key], LABELS[EXTRA[key]])
    heads = ["", "run"] + list(short_names(report.params).values()) + [
        f"{LABELS[key]} [95% CI]", "vs base", extra, "train s", "tok/s", "verdict"]
    align = ["<", "<"] + ["<"] * len(report.params) + [">", ">", ">", ">", ">", "<"]
    cells = []
    for i, row in enumerate(report.rows):
        val = fmt_metric(row.value, key) + (f"±{fmt_metric(row.spread, key, row.value)}" if len(row.runs) > 1 else "")
        ci = f" [{fmt_metric(row.low, key)}, {fmt_metric(row.high, key)}]" if row.low is not None else ""
        params = [",".join(dict.fromkeys(fmt_param(m.params.get(p)) for m in row.runs)) for p in report.params]
        train_s = "-" if row.train_s is None else f"{row.train_s:.1f}" if row.train_s < 100 else f"{row.train_s:.0f}"
        cells.append(["*" if i == 0 else "", row.name, *params, val + ci,
                      fmt_change(row.vs_base, report.change_unit) if row.vs_base is not None else "-",
                      f"{row.extra:.3f}" if row.extra is not None else "-", train_s,
                      f"{row.tokens_per_s:.0f}" if row.tokens_per_s is not None else "-", row.verdict])
    return heads, cells, align


def _fit(cell: str, width: int) -> str:
    return cell if len(cell) <= width else cell[: width - 1] + "…"


def _lines(heads, cells, align) -> list[str]:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    fmt = lambda cols: "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cols, align, widths)).rstrip()  # noqa: E731
    return [fmt(heads), fmt([("-" * w) if h else "" for h, w in zip(heads, widths)]), *(fmt(c) for c in cells)]


def _without(heads, cells, align, i, j=None):
    """The table without columns i..j (j: i + 1)."""
    j = i + 1 if j is None else j
    return heads[:i] + heads[j:], [c[:i] + c[j:] for c in cells], align[:i] + align[j:]


def fitted(report: Report, width: int) -> tuple[list[str], list[str], list[str]]:
    """(table lines, changed params under the table, dropped columns) for `width` columns."""
    heads, cells, align = table(report)
    too_wide = lambda lines: max(map(len, lines)) > width  # noqa: E731
    n_par, dropped, below = len(report.params), [], []
    lines = _lines(heads, cells, align)
    if too_wide(lines) and n_par:  # the changed params go under the table, one run a line
        pk = list(short_names(report.params).values())
        below = [f"  {c[1]}: " + ", ".join(f"{k}={v}" for k, v in zip(pk, c[2:2 + n_par])) for c in cells]
        heads, cells, align = _without(heads, cells, align, 2, 2 + n_par)
        lines = _lines(heads, cells, align)
    for drop in DROP_ORDER:
        if not too_wide(lines):
            break
        if drop in heads:
            dropped.append(drop)
            heads, cells, align = _without(heads, cells, align, heads.index(drop))
            lines = _lines(heads, cells, align)
    if too_wide(lines):  # long run names: shorten them
        over = max(map(len, lines)) - width
        name_w = max(len(c[1]) for c in cells)
        cells = [[c[0], _fit(c[1], max(8, name_w - over)), *c[2:]] for c in cells]
        lines = _lines(heads, cells, align)
    return lines, below, dropped


def render_text(report: Report, width: int = WIDTH) -> str:
    """The table in at most `width` columns, a title above and the notes below."""
    lines, below, dropped = fitted(report, width)
    n = len(report.rows)
    direction = "higher" if report.higher_is_better else "lower"
    top = [f"{n} run{'s' * (n != 1)} ({report.task}), ranked by {LABELS[report.key]} ({direction} is better); * = best"]
    out = [*top, *report.header, "", *lines]
    if below:
        out += ["", "changed params:", *below]
    if dropped:
        out.append(f"(left out at {width} columns: {', '.join(dropped)}; all columns in reports/compare.html)")
    h_heads, h_cells = report.harness
    if h_cells:  # lm-evaluation-harness, base beside tuned per run and task (metrics/harness.json)
        out += ["", *_lines(h_heads, h_cells, ["<", "<", "<", ">", ">", ">"])]
    out += [""] + report.notes
    return "\n".join(wrap(line, width) for line in out) + "\n"


def wrap(line: str, width: int) -> str:
    if len(line) <= width:
        return line
    return "\n".join(textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False))
