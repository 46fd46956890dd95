"""Compare runs: `python -m lmtune.cli.compare [EXP ...] [--all]` (make compare).

Default runs: the workspace, HEAD and every experiment of HEAD (as `dvc exp show`); EXP names or revs
pick some (from any commit); --all takes every commit's. Reads DVC's own outputs only:
- `dvc exp show --json`: each run's params, metrics (metrics/eval.json, train_timing.json) and deps;
- `dvc.api.read(metrics/blocks.csv, rev=...)`: the per-block NLL and counts at each run's revision;
- `dvc plots diff --json`: training curves (and the confusion matrix) filled into DVC's own templates.

Prints a table that fits 100 columns and writes reports/compare.html (self-contained: vega, vega-lite
and vega-embed inlined from vl-convert), compare.txt, compare.json and every chart as PNG and SVG.
"""
import argparse
import csv
import html
import io
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmtune import paths, stats, tasks
from lmtune.cli import plots_template
from lmtune.errors import UserError, cli
from lmtune.io import atomic_write_bytes, atomic_write_text

LN2 = math.log(2)
WIDTH = 100


LABELS = {"perplexity": "perplexity", "bits_per_byte": "bits/byte", "accuracy": "accuracy", "macro_f1": "macro-F1"}
# The second number beside the ranking metric: next-token accuracy beside perplexity, macro-F1 beside a
# classifier's accuracy.
EXTRA = {"perplexity": "accuracy", "bits_per_byte": "accuracy", "accuracy": "macro_f1"}


def rel(path: Path) -> str:
    return path.relative_to(paths.ROOT).as_posix()


# ---- runs, as DVC reports them ------------------------------------------------------------------

@dataclass
class Run:
    name: str                      # experiment name, branch or short commit, or "workspace"
    rev: str | None                # git commit of the run (None: the workspace)
    params: dict                   # params.yaml, flattened to dotted keys
    eval: dict                     # metrics/eval.json: {"base": {...}, "tuned": {...}}
    timing: dict = field(default_factory=dict)          # metrics/train_timing.json
    base_model: str | None = None  # hash of the models/base dep: which base model
    blocks: dict | None = None     # metrics/blocks.csv columns as arrays

    @property
    def task(self) -> str:
        return self.params.get("task", "causal_lm")

    @property
    def plot_rev(self) -> str:
        return self.rev or "workspace"


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v
    return out


def dvc_json(*args: str):
    """`dvc ARGS --json` in the repo, parsed; a failure is one line naming the command."""
    proc = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=paths.ROOT, text=True, capture_output=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"dvc {' '.join(args)}: {last}")
    return json.loads(proc.stdout)


def _file_data(data: dict, kind: str, path: Path) -> dict | None:
    entry = (data.get(kind) or {}).get(rel(path)) or {}
    return entry.get("data")


def runs_from_exp_show(rows: list[dict]) -> tuple[list[Run], list[str]]:
    """`dvc exp show --json` -> runs with metrics, plus one note per run left out (and why).

    Order: each commit, then its experiments, then the workspace, so a duplicate (the workspace after
    `dvc exp run`, or after a commit of the same results) keeps the named run.
    """
    found, skipped = [], []

    def add(entry: dict, name: str, rev: str | None, state: str | None = None):
        data = entry.get("data") or {}
        if entry.get("error") or state in ("failed", "queued", "running"):
            skipped.append(f"{name}: {state or 'error: ' + str(entry['error'].get('msg', entry['error']))}")
            return
        ev = _file_data(data, "metrics", paths.EVAL_METRICS)
        params = _file_data(data, "params", paths.PARAMS)
        if not ev or "tuned" not in ev or params is None:
            skipped.append(f"{name}: no {rel(paths.EVAL_METRICS)} (not run through evaluate)")
            return
        base_dep = (data.get("deps") or {}).get(rel(paths.BASE)) or {}
        found.append(Run(name, rev, flatten(params), ev, _file_data(data, "metrics", paths.TRAIN_TIMING) or {},
                         base_dep.get("hash")))

    workspace = None
    for row in rows:
        if row["rev"] == "workspace":
            workspace = row
            continue
        add(row, row.get("name") or row["rev"][:7], row["rev"])
        for exp in row.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            revs = exp.get("revs") or []
            if revs:
                add(revs[0], exp.get("name") or revs[0].get("name") or revs[0]["rev"][:7], revs[0]["rev"], state)
    if workspace:
        add(workspace, "workspace", None)
    runs = []
    for r in found:
        twin = next((o for o in runs if o.params == r.params and o.eval == r.eval and o.timing == r.timing), None)
        if twin:
            skipped.append(f"{r.name}: same params and metrics as {twin.name}")
        else:
            runs.append(r)
    seen: dict[str, int] = {}
    for r in runs:  # --all: one experiment name can exist on two commits
        seen[r.name] = seen.get(r.name, 0) + 1
        if seen[r.name] > 1:
            r.name = f"{r.name}@{r.rev[:7]}"
    return runs, skipped


def select(runs: list[Run], wanted: list[str]) -> list[Run]:
    """The runs named by experiment name, branch, commit (prefix) or 'workspace', in `wanted` order."""
    out = []
    for w in wanted:
        hits = [r for r in runs if w in (r.name, r.plot_rev) or (len(w) >= 4 and r.rev and r.rev.startswith(w))]
        if not hits:
            raise UserError(f"compare: no run {w!r} with metrics; known: {', '.join(r.name for r in runs) or 'none'}")
        out += [h for h in hits if h not in out]
    return out


def parse_blocks(text: str) -> dict[str, np.ndarray]:
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        return {}
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]}


def read_blocks(run: Run) -> dict | None:
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        return parse_blocks(dvc.api.read(rel(paths.BLOCKS), repo=str(paths.ROOT), rev=run.rev)) or None
    except (FileNotFoundError, DvcException):
        return None  # a run from before evaluate wrote per-block numbers: no interval, no verdict


# ---- analysis (pure: runs in, report out) --------------------------------------------------------

def ratio(run: Run, key: str) -> stats.Ratio | None:
    """The tuned model's `key` as a ratio over the run's blocks (examples, for a classifier)."""
    b = run.blocks
    if not b:
        return None
    if key == "perplexity" and {"tuned_nll", "n_tokens"} <= set(b):
        return stats.Ratio(b["tuned_nll"], b["n_tokens"], "exp")
    if key == "bits_per_byte" and {"tuned_nll", "n_bytes"} <= set(b):
        return stats.Ratio(b["tuned_nll"] / LN2, b["n_bytes"])
    if key == "accuracy" and {"tuned_pred", "label"} <= set(b):
        return stats.Ratio((b["tuned_pred"] == b["label"]).astype(float), np.ones(len(b["label"])))
    return None




def same_tokens(runs: list[Run]) -> bool | None:
    """Did every run score the same validation tokens? None when the runs don't say.

    Per-block token and byte counts settle it (another tokenizer cuts the same text into other tokens,
    so the bytes per fixed-size block change); without blocks.csv, the totals in eval.json.
    """
    if all(r.blocks for r in runs):
        return all(stats.same_units(runs[0].blocks, r.blocks) for r in runs)
    totals = [(r.eval["tuned"].get("n_tokens"), r.eval["tuned"].get("n_bytes")) for r in runs]
    if any(n is None for t in totals for n in t):
        return None
    return len(set(totals)) == 1


@dataclass
class Row:
    runs: list[Run]
    value: float                 # ranking metric (mean over seeds)
    spread: float                # sd over seeds (0 for one)
    low: float | None = None     # 95% interval
    high: float | None = None
    base: float | None = None
    vs_base: float | None = None
    extra: float | None = None   # next-token accuracy (LM) or macro-F1 (classifier)
    train_s: float | None = None
    tokens_per_s: float | None = None
    verdict: str = "n/a"
    vs_best: stats.Comparison | None = None

    @property
    def name(self) -> str:
        return self.runs[0].name + (f" ×{len(self.runs)}" if len(self.runs) > 1 else "")


@dataclass
class Report:
    task: str
    key: str                    # ranking metric
    higher_is_better: bool
    rows: list[Row]
    params: list[str]           # params that differ between the runs
    header: list[str]
    notes: list[str]


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def analyse(runs: list[Run], skipped: list[str] = (), seed: int = stats.BOOT_SEED,
            n_boot: int = stats.N_BOOT) -> Report:
    if not runs:
        raise UserError("compare: no run has metrics/eval.json yet (run `dvc repro` or `dvc exp run` first)")
    by_task: dict[str, list[Run]] = {}
    for r in runs:
        by_task.setdefault(r.task, []).append(r)
    task = runs[0].task
    runs = by_task.pop(task)  # one task's runs: their metrics compare
    notes = [f"left out: {s}" for s in skipped]
    notes += [f"left out: {r.name}: task {other}, not {task}" for other, rs in by_task.items() for r in rs]
    ranks = tasks.ranking(tasks.get(task))
    key, hib = ranks.key, ranks.higher_is_better
    header = []
    if key == "perplexity":  # per token: only comparable between runs that scored the same tokens
        same = same_tokens(runs)
        has_bpb = all("bits_per_byte" in r.eval["tuned"] for r in runs)
        if same is False and has_bpb:
            key, hib = "bits_per_byte", False
            header.append("ranked by bits per byte, not perplexity: the runs scored different validation tokens "
                          "(another tokenizer or other validation data), so perplexity per token is not comparable")
        elif same is False:
            header.append("warning: the runs scored different validation tokens and have no bits_per_byte; "
                          "their perplexities are not comparable")
    configs = {r.name: r.params for r in runs}
    groups = [[next(r for r in runs if r.name == n) for n in g] for g in stats.seed_groups(configs)]
    extra_key = EXTRA[key]

    rows = []
    for members in groups:
        vals = [m.eval["tuned"][key] for m in members]
        value, spread = stats.mean_spread(vals)
        bases = [m.eval.get("base", {}).get(key) for m in members]
        base = _mean(bases)
        if base is None or any(b is None for b in bases):
            vs = None
        elif hib:  # accuracy-like: change in points
            vs = _mean([(v - b) * 100 for v, b in zip(vals, bases)])
        else:
            vs = _mean([(v / b - 1) * 100 for v, b in zip(vals, bases)])
        rows.append(Row(members, value, spread, base=base, vs_base=vs,
                        extra=_mean([m.eval["tuned"].get(extra_key) for m in members]),
                        train_s=_mean([m.timing.get("wall_time_s") for m in members]),
                        tokens_per_s=_mean([m.timing.get("tokens_per_second") for m in members])))
    rows.sort(key=lambda r: (-r.value if hib else r.value, r.name))

    for r in runs:  # the per-block file must be the one eval.json was computed from
        part = ratio(r, key)
        if part is not None and not math.isclose(part.value(), r.eval["tuned"][key], rel_tol=1e-6):
            notes.append(f"warning: {r.name}: {rel(paths.BLOCKS)} gives {LABELS[key]} {part.value():.6g}, "
                         f"{rel(paths.EVAL_METRICS)} {r.eval['tuned'][key]:.6g}: not from the same evaluation")
    ratios = {}
    for row in rows:
        parts = [ratio(m, key) for m in row.runs]
        ratios[id(row)] = stats.Ratio.group(parts) if all(parts) else None
        if ratios[id(row)] is not None:
            _, row.low, row.high = stats.interval(ratios[id(row)], n_boot=n_boot, seed=seed)
    best = rows[0]
    best.verdict = "best"
    for row in rows[1:]:
        a, b = ratios[id(row)], ratios[id(best)]
        if a is None or b is None:
            continue
        members = row.runs + best.runs
        # The task's shared block columns (an LM block's token and byte counts, a classifier's labels)
        # say whether two runs scored the same units.
        keys = tasks.get(task).block_columns[0]
        paired = all(stats.same_units(members[0].blocks, m.blocks, keys) for m in members)
        row.vs_best = stats.compare(a, b, hib, paired, n_boot=n_boot, seed=seed)
        row.verdict = row.vs_best.verdict

    with_blocks = [r.blocks for r in runs if r.blocks]
    units = "examples" if with_blocks and "label" in with_blocks[0] else "validation blocks"
    n_units = sorted({len(next(iter(b.values()))) for b in with_blocks})
    if n_units:
        notes.append(f"[95% CI]: percentile bootstrap over each run's {'/'.join(map(str, n_units))} {units} "
                     f"({n_boot} resamples, seed {seed}; the same inputs always give the same numbers)")
    kinds = sorted({r.vs_best.noise for r in rows if r.vs_best})
    if kinds:
        notes.append("verdict vs best: 95% bootstrap interval of the difference; better/worse when it excludes 0. "
                     f"Noise covered: {'; '.join(kinds)}. Eval sample = which {units} were scored. Training "
                     "noise (what the seed changes) is covered only in rows marked ×k, whose seeds are resampled "
                     "too; measure it with a few -S seed=N runs of one config")
    without = [r.name for r in runs if not r.blocks]
    if without:
        notes.append(f"no interval or verdict for {', '.join(without)}: no {rel(paths.BLOCKS)} at that revision "
                     "(evaluated before evaluate wrote per-block numbers)")
    for row in rows:
        if len(row.runs) > 1:
            notes.append(f"{row.name}: {', '.join(m.name for m in row.runs)} differ only in seed; "
                         f"{LABELS[key]} = mean ± sd over seeds")
    bases = {r.base for r in rows if r.base is not None}
    if len(bases) == 1:
        notes.append(f"base model {LABELS[key]}: {fmt_metric(bases.pop(), key)} (vs base: change of the tuned model)")
    if len({r.base_model for r in runs}) > 1:
        notes.append("base models differ between runs (models/base hash)")
    return Report(task, key, hib, rows, stats.differing(configs), header, notes)


# ---- formatting ---------------------------------------------------------------------------------

def decimals(x: float, key: str) -> int:
    """4 decimals for shares and bits/byte; perplexity to 4 significant digits (5.432, 26.75, 123.4, 36188)."""
    if key in ("accuracy", "macro_f1", "bits_per_byte"):
        return 4
    return 3 if abs(x) < 10 else 2 if abs(x) < 100 else 1 if abs(x) < 1000 else 0


def fmt_metric(x: float | None, key: str, like: float | None = None) -> str:
    """x to the decimals of `like` (default x itself): a spread or an interval end shown like its value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{decimals(x if like is None else like, key)}f}"


def fmt_param(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


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
    for row in report.rows:
        val = fmt_metric(row.value, key) + (f"±{fmt_metric(row.spread, key, row.value)}" if len(row.runs) > 1 else "")
        ci = f" [{fmt_metric(row.low, key)}, {fmt_metric(row.high, key)}]" if row.low is not None else ""
        unit = "pp" if report.higher_is_better else "%"
        params = []
        for p in report.params:
            vals = list(dict.fromkeys(fmt_param(m.params.get(p)) for m in row.runs))
            params.append(",".join(vals))
        cells.append(["*" if row.verdict == "best" else "", row.name, *params, val + ci,
                      f"{row.vs_base:+.1f}{unit}" if row.vs_base is not None else "-",
                      f"{row.extra:.3f}" if row.extra is not None else "-",
                      (f"{row.train_s:.1f}" if row.train_s < 100 else f"{row.train_s:.0f}") if row.train_s is not None else "-",
                      f"{row.tokens_per_s:.0f}" if row.tokens_per_s is not None else "-",
                      row.verdict])
    return heads, cells, align


def _fit(cell: str, width: int) -> str:
    return cell if len(cell) <= width else cell[: width - 1] + "…"


def _lines(heads, cells, align) -> list[str]:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    fmt = lambda cols: "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cols, align, widths)).rstrip()  # noqa: E731
    return [fmt(heads), fmt([("-" * w) if h else "" for h, w in zip(heads, widths)]), *(fmt(c) for c in cells)]


def render_text(report: Report, width: int = WIDTH) -> str:
    """The table in at most `width` columns: params move under the table, then columns drop, if needed."""
    heads, cells, align = table(report)
    n_par = len(report.params)
    dropped, below = [], []
    lines = _lines(heads, cells, align)
    if max(map(len, lines)) > width and n_par:  # the changed params go under the table, one run a line
        pk = list(short_names(report.params).values())
        below = [f"  {c[1]}: " + ", ".join(f"{k}={v}" for k, v in zip(pk, c[2:2 + n_par])) for c in cells]
        heads, align = heads[:2] + heads[2 + n_par:], align[:2] + align[2 + n_par:]
        cells = [c[:2] + c[2 + n_par:] for c in cells]
        lines = _lines(heads, cells, align)
    for drop in ("tok/s", "train s", "acc", "macro-F1", "vs base"):
        if max(map(len, lines)) <= width:
            break
        if drop in heads:
            i = heads.index(drop)
            dropped.append(drop)
            heads, align = heads[:i] + heads[i + 1:], align[:i] + align[i + 1:]
            cells = [c[:i] + c[i + 1:] for c in cells]
            lines = _lines(heads, cells, align)
    if max(map(len, lines)) > width:  # long run names: shorten them
        over = max(map(len, lines)) - width
        name_w = max(len(c[1]) for c in cells)
        cells = [[c[0], _fit(c[1], max(8, name_w - over)), *c[2:]] for c in cells]
        lines = _lines(heads, cells, align)
    n = len(report.rows)
    direction = "higher" if report.higher_is_better else "lower"
    top = [f"{n} run{'s' * (n != 1)} ({report.task}), ranked by {LABELS[report.key]} ({direction} is better); * = best"]
    top += report.header
    out = [*top, "", *lines]
    if below:
        out += ["", "changed params:", *below]
    if dropped:
        out.append(f"(left out at {width} columns: {', '.join(dropped)}; all columns in reports/compare.html)")
    out += [""] + report.notes
    return "\n".join(wrap(line, width) for line in out) + "\n"


def wrap(line: str, width: int) -> str:
    import textwrap

    if len(line) <= width:
        return line
    return "\n".join(textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False))


def report_json(report: Report) -> dict:
    return {
        "task": report.task, "ranked_by": report.key, "higher_is_better": report.higher_is_better,
        "changed_params": report.params, "header": report.header, "notes": report.notes,
        "rows": [{
            "name": r.name, "runs": [{"name": m.name, "rev": m.rev, "params": {p: m.params.get(p) for p in report.params},
                                      "tuned": m.eval["tuned"], "base": m.eval.get("base")} for m in r.runs],
            "value": r.value, "spread": r.spread, "low": r.low, "high": r.high, "base": r.base, "vs_base": r.vs_base,
            "verdict": r.verdict,
            "vs_best": None if r.vs_best is None else {"diff": r.vs_best.diff, "low": r.vs_best.low, "high": r.vs_best.high,
                                                       "paired": r.vs_best.paired, "noise": r.vs_best.noise},
            "train_s": r.train_s, "tokens_per_s": r.tokens_per_s,
        } for r in report.rows],
    }


# ---- charts (vega-lite specs) -------------------------------------------------------------------

CURVES = {"loss": "training loss", "eval/loss": "eval loss"}  # dvclive names under plots/metrics


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
    runs = [m for row in report.rows for m in row.runs]
    labels = {m.plot_rev: m.name for m in runs}
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


def bars_spec(report: Report) -> dict:
    """The ranking metric per run with its interval; the base model as a reference line (or ticks)."""
    key, label = report.key, LABELS[report.key]
    values = [{"run": r.name, "value": r.value, "low": r.low, "high": r.high, "base": r.base, "verdict": r.verdict}
              for r in report.rows]
    order = [r.name for r in report.rows]
    x = {"field": "run", "type": "nominal", "sort": order, "title": None, "axis": {"labelAngle": -30}}
    layers = [
        {"mark": {"type": "bar", "color": "#4c78a8"},
         "encoding": {"x": x, "y": {"field": "value", "type": "quantitative", "title": label},
                      "tooltip": [{"field": f} for f in ("run", "value", "low", "high", "base", "verdict")]}},
        {"mark": {"type": "rule", "color": "#222", "strokeWidth": 2},
         "transform": [{"filter": "datum.low != null"}],
         "encoding": {"x": x, "y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"}}},
    ]
    bases = {r.base for r in report.rows if r.base is not None}
    if len(bases) == 1:  # one base model for all runs: a line across
        base = [{"base": bases.pop()}]
        layers += [
            {"data": {"values": base}, "mark": {"type": "rule", "color": "#e45756", "strokeDash": [6, 4], "strokeWidth": 2},
             "encoding": {"y": {"field": "base", "type": "quantitative"}}},
            {"data": {"values": base}, "mark": {"type": "text", "color": "#e45756", "align": "left", "dx": 4, "dy": -7, "x": 0},
             "encoding": {"y": {"field": "base", "type": "quantitative"}, "text": {"value": "base model"}}},
        ]
    elif bases:  # several base models: a tick on each run's bar
        layers.append({"mark": {"type": "tick", "color": "#e45756", "thickness": 3},
                       "transform": [{"filter": "datum.base != null"}],
                       "encoding": {"x": x, "y": {"field": "base", "type": "quantitative"}}})
    return {"title": {"text": f"tuned {label} per run (95% interval); red: base model", "anchor": "middle"},
            "width": 420, "height": 260, "data": {"values": values}, "layer": layers}


def sweep_spec(report: Report) -> dict | None:
    """Each swept param against the ranking metric, for 3 or more runs (a parallel-coordinates stand-in)."""
    swept = [p for p in report.params if p != "seed"]
    if len(report.rows) < 3 or not swept:
        return None
    label = LABELS[report.key]
    panels = []
    for p in swept:
        vals = [row.runs[0].params.get(p) for row in report.rows]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)
        values = [{"x": v if numeric else fmt_param(v), "run": row.name, "value": row.value, "low": row.low,
                   "high": row.high} for v, row in zip(vals, report.rows)]
        scale = {"type": "log"} if numeric and min(vals) > 0 and max(vals) / min(vals) >= 10 else {"zero": False}
        scale["padding"] = 16  # pixels: the end points and their intervals clear the axes
        x = {"field": "x", "type": "quantitative" if numeric else "nominal", "title": p,
             **({"scale": scale, "axis": {"values": sorted(set(vals)), "format": "~g", "labelOverlap": "greedy"}}
                if numeric else {})}  # ticks at the swept values
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
        panels.append({"width": 260, "height": 220, "data": {"values": values}, "layer": layers})
    return {"title": {"text": f"sweep: each changed param against {label}", "anchor": "middle"}, "hconcat": panels}


def charts(report: Report) -> dict[str, dict]:
    out = plot_specs(report)
    out[report.key] = bars_spec(report)
    sweep = sweep_spec(report)
    if sweep:
        out["sweep"] = sweep
    order = ["loss", "eval_loss", report.key, "sweep", "confusion"]
    return {k: out[k] for k in order if k in out}


# ---- files --------------------------------------------------------------------------------------

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


def page(report: Report, specs: dict[str, dict]) -> str:
    e = html.escape
    heads, cells, align = table(report)
    cls = lambda a: ' class="l"' if a == "<" else ""  # noqa: E731
    rows = "\n".join(
        f'<tr{" class=best" if c[0] else ""}>' + "".join(f"<td{cls(a)}>{e(x)}</td>" for x, a in zip(c, align)) + "</tr>"
        for c in cells)
    tbl = ("<table>\n<tr>" + "".join(f"<th{cls(a)}>{e(h)}</th>" for h, a in zip(heads, align)) + "</tr>\n"
           + rows + "\n</table>")
    n = len(report.rows)
    direction = "higher" if report.higher_is_better else "lower"
    header = [f"{n} run{'s' * (n != 1)} ({report.task}), ranked by {LABELS[report.key]} ({direction} is better)"]
    # JSON inside <script>: "</" would end the script element early.
    specs_js = json.dumps(specs, sort_keys=True).replace("</", "<\\/")
    return PAGE.format(
        notice=plots_template.vega_notice(), bundle=plots_template.bundle(), table=tbl, specs=specs_js,
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


def collect(wanted: list[str], all_commits: bool) -> tuple[list[Run], list[str]]:
    args = ["exp", "show"] + (["--all-commits"] if all_commits or wanted else [])
    runs, skipped = runs_from_exp_show(dvc_json(*args))
    if wanted:
        runs, skipped = select(runs, wanted), []
    for r in runs:
        r.blocks = read_blocks(r)
    return runs, skipped


@cli
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lmtune.cli.compare", description=__doc__.split("\n")[0])
    ap.add_argument("exps", nargs="*", metavar="EXP", help="experiment names, branches or commits (default: "
                    "the workspace, HEAD and every experiment of HEAD)")
    ap.add_argument("--all", action="store_true", help="every commit's runs (dvc exp show --all-commits)")
    ap.add_argument("--width", type=int, default=None, help="table width (default: the terminal's, at most 100)")
    ap.add_argument("--out", type=Path, default=paths.REPORTS, help="report folder (default: reports/)")
    args = ap.parse_args(argv)
    width = args.width or min(WIDTH, shutil.get_terminal_size((WIDTH, 24)).columns)
    runs, skipped = collect(args.exps, args.all)
    report = analyse(runs, skipped)
    specs = charts(report)  # may add a note (curves DVC could not give), so before the text
    files = write_reports(report, specs, render_text(report, WIDTH), args.out)
    print(render_text(report, width), end="")
    print(f"\nreport: {files[0]} (charts as PNG and SVG beside it)")


if __name__ == "__main__":
    main()
