"""compare's charts as vega-lite specs: training curves (DVC's own templates), the forest plot of each
run's change with its interval, and the sweep (each changed param against the ranking metric)."""
import json
import math

from lmtune import paths
from lmtune.errors import UserError
from lmtune.report.analysis import Report, change
from lmtune.report.formats import LABELS, fmt_param
from lmtune.report.runs import dvc_json, rel

CURVES = {"loss": "training loss", "eval/loss": "eval loss"}  # dvclive names under plots/metrics
VERDICT_COLOURS = {"best": "#222222", "reference": "#222222", "better": "#54a24b", "worse": "#e45756",
                   "within noise": "#4c78a8", "n/a": "#9d9d9d"}


def relabel(spec: dict, labels: dict[str, str], title: str) -> dict:
    """A DVC-filled spec from `dvc plots diff --json`, with run names instead of revs, and no $schema URL."""
    spec = json.loads(json.dumps(spec))
    spec.pop("$schema", None)
    for v in spec.get("data", {}).get("values", []):
        if "rev" in v:
            v["rev"] = labels.get(v["rev"], v["rev"])

    def walk(node):
        if isinstance(node, dict):
            if node.get("field") == "rev":
                node["title"] = "run"
                if isinstance(node.get("scale"), dict) and "domain" in node["scale"]:
                    node["scale"]["domain"] = [labels.get(d, d) for d in node["scale"]["domain"]]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    spec["title"] = {"text": title, "anchor": "middle"}
    if isinstance(spec.get("width"), (int, float)):
        spec["width"], spec["height"] = 420, 260
    return spec


def plot_specs(report: Report) -> dict[str, dict]:
    """Training curves and confusion matrix: DVC's own templates, filled by `dvc plots diff --json`."""
    labels = {m.plot_rev: m.name for row in report.rows for m in row.runs}
    try:
        data = dvc_json("plots", "diff", *labels)
    except UserError as e:
        report.notes.append(f"training curves: {e}")
        return {}
    plots = data.get("data", data)
    out = {}
    live = rel(paths.TRAIN_LIVE)
    for name, title in CURVES.items():
        found = [k for k in plots if k.startswith(live) and k.endswith(f"/metrics/{name}.tsv")]
        if found and plots[found[0]]:
            out[name.replace("/", "_")] = relabel(plots[found[0]][0]["content"], labels, title)
    conf = plots.get(rel(paths.CONFUSION)) or []
    if conf:  # DVC gives no plot for the header-only file of the language-model tasks
        out["confusion"] = relabel(conf[0]["content"], labels, "confusion matrix (tuned model)")
    return out


def forest_points(report: Report) -> tuple[list[dict], str]:
    """One point per row: its change against the reference run (--against) or its base model, with the
    interval; and what the changes are against."""
    hib = report.higher_is_better
    points = []
    for row in report.rows:
        c = row.vs_ref if report.against else row.vs_base_cmp
        if report.against and row is report.reference:
            points.append({"run": row.name, "change": 0.0, "low": None, "high": None, "verdict": row.verdict})
        elif c is not None:
            mid, low, high = change(c, hib)
            points.append({"run": row.name, "change": mid, "low": low, "high": high, "verdict": row.verdict})
    return points, (report.reference.name if report.against else "its base model")


def forest_spec(report: Report) -> dict | None:
    """Each run's change with its 95% interval on an axis zoomed to the changes (not bars from zero)."""
    points, against = forest_points(report)
    if not points:
        return None
    unit = "points" if report.higher_is_better else "%"
    ends = [v for p in points for v in (p["low"], p["high"], p["change"]) if v is not None]
    lo, hi = min(ends), max(ends)
    pad = max((hi - lo) * 0.08, 0.05)
    with_zero = lo - (hi - lo) <= 0 <= hi + (hi - lo)  # zero close enough to show without squashing the intervals
    domain = [min(lo, 0.0) - pad, max(hi, 0.0) + pad] if with_zero else [lo - pad, hi + pad]
    y = {"field": "run", "type": "nominal", "sort": [p["run"] for p in points], "title": None}
    x = {"field": "change", "type": "quantitative", "title": f"change in {LABELS[report.key]} vs {against} ({unit})",
         "scale": {"domain": domain, "zero": False, "nice": False}}
    present = [v for v in VERDICT_COLOURS if any(p["verdict"] == v for p in points)]
    colour = {"field": "verdict", "type": "nominal", "title": f"verdict vs {report.reference.name}",
              "scale": {"domain": present, "range": [VERDICT_COLOURS[v] for v in present]}}
    layers = [
        {"mark": {"type": "rule", "strokeWidth": 2.5}, "transform": [{"filter": "datum.low != null"}],
         "encoding": {"y": y, "x": {**x, "field": "low"}, "x2": {"field": "high"}, "color": colour}},
        {"mark": {"type": "point", "filled": True, "size": 90},
         "encoding": {"y": y, "x": x, "color": colour,
                      "tooltip": [{"field": f} for f in ("run", "change", "low", "high", "verdict")]}},
    ]
    if with_zero:
        layers.insert(0, {"data": {"values": [{"zero": 0}]}, "mark": {"type": "rule", "color": "#888", "strokeDash": [4, 3]},
                          "encoding": {"x": {"field": "zero", "type": "quantitative", "scale": x["scale"]}}})
    subtitle = [] if report.detectable is None else [
        f"runs within {report.detectable:.1f}{report.change_unit} of {report.reference.name} cannot be told apart "
        "on this validation set (smallest detectable change, 80% power)"]
    return {"title": {"text": f"change in {LABELS[report.key]} per run vs {against} (95% interval)",
                      "subtitle": subtitle, "anchor": "middle"},
            "width": 420, "height": max(80, 34 * len(points)), "data": {"values": points}, "layer": layers}


def tick_format(values: list[float]) -> str:
    """A d3 format that writes every swept value differently and briefly: 0.05, 16, 1e-4 and 1.5e-4.

    Python's `e` and d3's `~e` agree on the digits, so the shortest precision that keeps the values
    apart here keeps them apart on the axis.
    """
    if all(v == 0 or 1e-3 <= abs(v) < 1e5 for v in values) and len({f"{v:g}" for v in values}) == len(values):
        return "~g"
    for digits in range(6):
        if len({f"{v:.{digits}e}" for v in values}) == len(values):
            return f".{digits}~e"
    return ".6~e"


def _sweep_x(p: str, vals: list, width: int) -> tuple[dict, int]:
    """(x encoding, panel width) for one swept param: numeric values on a log or linear axis, labelled at
    each value; the panel widens until neighbouring labels are at least 14 px apart."""
    distinct = sorted(set(vals))
    log = min(distinct) > 0 and max(distinct) / min(distinct) >= 10
    pos = [math.log10(v) for v in distinct] if log else distinct
    span = (pos[-1] - pos[0]) or 1.0
    gap = min((b - a) / span * width for a, b in zip(pos, pos[1:])) if len(pos) > 1 else width
    scale = {"type": "log"} if log else {"zero": False}
    scale["nice"] = False  # a log axis "nice"d out to whole decades would squeeze the values together
    scale["padding"] = 16  # pixels: the end points and their intervals clear the axes
    fmt = tick_format(distinct)
    longest = max(len(f"{v:g}" if fmt == "~g" else f"{v:.{int(fmt[1])}e}".replace("e-0", "e-")) for v in distinct)
    # ~6 px a character at the axis' 10 px font: upright labels need that much room, turned ones 12 px.
    upright = gap > 6 * longest + 6
    axis = {"values": distinct, "format": fmt, "labelOverlap": False, "labelAngle": 0 if upright else -90}
    wide = width if upright or gap >= 14 else min(640, math.ceil(width * 14 / gap))
    return {"field": "x", "type": "quantitative", "title": p, "scale": scale, "axis": axis}, wide


def sweep_spec(report: Report) -> dict | None:
    """Each swept param against the ranking metric, for 3 or more runs (a parallel-coordinates stand-in)."""
    swept = [p for p in report.params if p != "seed"]
    if len(report.rows) < 3 or not swept:
        return None
    label, width = LABELS[report.key], 260
    panels = []
    for p in swept:
        vals = [row.runs[0].params.get(p) for row in report.rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        values = [{"x": v if numeric else fmt_param(v), "run": row.name, "value": row.value, "low": row.low,
                   "high": row.high} for v, row in zip(vals, report.rows)]
        x, wide = _sweep_x(p, vals, width) if numeric else ({"field": "x", "type": "nominal", "title": p}, width)
        y = {"field": "value", "type": "quantitative", "title": label, "scale": {"zero": False}}
        layers = [
            {"mark": {"type": "rule", "color": "#888"}, "transform": [{"filter": "datum.low != null"}],
             "encoding": {"x": x, "y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"}}},
            {"mark": {"type": "point", "filled": True, "size": 80, "color": "#f58518"},
             "encoding": {"x": x, "y": y, "tooltip": [{"field": "run"}, {"field": "x", "title": p}, {"field": "value"}]}},
        ]
        if numeric:
            layers.insert(0, {"mark": {"type": "line", "color": "#f58518", "opacity": 0.5},
                              "encoding": {"x": x, "y": y, "order": {"field": "x"}}})
        panels.append({"width": wide, "height": 220, "data": {"values": values}, "layer": layers})
    return {"title": {"text": f"sweep: each changed param against {label}", "anchor": "middle"}, "hconcat": panels}


def charts(report: Report) -> dict[str, dict]:
    """Every chart of the page, in page order: curves, the forest plot, the sweep, the confusion matrix."""
    out = plot_specs(report)
    for name, spec in (("forest", forest_spec(report)), ("sweep", sweep_spec(report))):
        if spec:
            out[name] = spec
    order = ["loss", "eval_loss", "forest", "sweep", "confusion"]
    return {k: out[k] for k in order if k in out}
