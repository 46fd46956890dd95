"""compare's files: reports/compare.html (self-contained: vega, vega-lite and vega-embed inlined),
compare.txt, compare.json and every chart as PNG and SVG (vl-convert, offline)."""
import html
import json
from pathlib import Path

from lmtune.io import atomic_write_bytes, atomic_write_text
from lmtune.report import vega
from lmtune.report.analysis import Report, report_json
from lmtune.report.formats import LABELS
from lmtune.report.table import table

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>lmtune compare</title>
<!--
{notice}
-->
<style>
body {{ font-family: sans-serif; margin: 16px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 8px 0; }}
th, td {{ padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }}
th.l, td.l {{ text-align: left; }}
tr.best {{ font-weight: bold; background: #eef6ee; }}
p.note {{ font-size: 12px; color: #555; margin: 2px 0; max-width: 1100px; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 24px; margin-top: 16px; }}
</style>
<script>
{bundle}
</script>
</head>
<body>
<h2>lmtune compare</h2>
{header}
{table}
{notes}
<div class="charts">
{divs}
</div>
<script>
const specs = {specs};
for (const [id, spec] of Object.entries(specs)) {{
  vegaEmbed("#chart-" + id, spec, {{mode: "vega-lite", renderer: "svg", actions: false}})
    .catch(err => {{ console.error(err); document.getElementById("chart-" + id).textContent = "chart failed: " + err; }});
}}
</script>
</body>
</html>
"""


def _html_table(report: Report) -> str:
    e = html.escape
    heads, cells, align = table(report)
    cls = lambda a: ' class="l"' if a == "<" else ""  # noqa: E731
    rows = "\n".join(
        f'<tr{" class=best" if c[0] else ""}>' + "".join(f"<td{cls(a)}>{e(x)}</td>" for x, a in zip(c, align)) + "</tr>"
        for c in cells)
    return ("<table>\n<tr>" + "".join(f"<th{cls(a)}>{e(h)}</th>" for h, a in zip(heads, align)) + "</tr>\n"
            + rows + "\n</table>")


def _harness_table(report: Report) -> str:
    """lm-evaluation-harness rows (metrics/harness.json of each run) under the main table; empty without any."""
    e = html.escape
    heads, cells = report.harness
    if not cells:
        return ""
    return ("\n<h2>lm-evaluation-harness</h2>\n<table>\n<tr>" + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr>\n"
            + "\n".join("<tr>" + "".join(f"<td>{e(x)}</td>" for x in c) + "</tr>" for c in cells) + "\n</table>")


def page(report: Report, specs: dict[str, dict]) -> str:
    e = html.escape
    n = len(report.rows)
    direction = "higher" if report.higher_is_better else "lower"
    header = [f"{n} run{'s' * (n != 1)} ({report.task}), ranked by {LABELS[report.key]} ({direction} is better)"]
    # JSON inside <script>: "</" would end the script element early.
    specs_js = json.dumps(specs, sort_keys=True).replace("</", "<\\/")
    return PAGE.format(
        notice=vega.vega_notice(), bundle=vega.bundle(), table=_html_table(report) + _harness_table(report), specs=specs_js,
        header="\n".join(f"<p>{e(h)}</p>" for h in header + report.header),
        notes="\n".join(f'<p class="note">{e(x)}</p>' for x in report.notes),
        divs="\n".join(f'<div id="chart-{k}" class="chart"></div>' for k in specs))


def write_reports(report: Report, specs: dict[str, dict], text: str, out: Path) -> list[Path]:
    """compare.html, compare.txt, compare.json and every chart as PNG and SVG, each written atomically."""
    import vl_convert as vlc

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, spec in specs.items():
        atomic_write_text(out / f"{name}.svg", vlc.vegalite_to_svg(spec))
        atomic_write_bytes(out / f"{name}.png", vlc.vegalite_to_png(spec, scale=2))
        written += [out / f"{name}.svg", out / f"{name}.png"]
    atomic_write_text(out / "compare.html", page(report, specs))
    atomic_write_text(out / "compare.txt", text)
    atomic_write_text(out / "compare.json", json.dumps(report_json(report), indent=2, sort_keys=True) + "\n")
    return [out / "compare.html", out / "compare.txt", out / "compare.json", *written]
