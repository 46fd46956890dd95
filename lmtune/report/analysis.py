"""compare's analysis: runs in, a Report out (ranking, intervals, verdicts, notes). No files, no DVC.

The statistics themselves (resampling, intervals, tests) are lmtune/stats.py; this module decides what
is compared with what: which metric ranks the runs, which runs form a seed group, which run each verdict
is against, and says in the notes which method and which noise every number accounts for.
"""
import math
from dataclasses import dataclass, field

import numpy as np

from lmtune import paths, stats, tasks
from lmtune.errors import UserError
from lmtune.report import harness
from lmtune.report.formats import EXTRA, LABELS, fmt_change, fmt_metric
from lmtune.report.runs import Run, matches, rel

LN2 = math.log(2)


def stream_order(blocks: dict) -> np.ndarray:
    """Row order by document, then position in it, when the rows say (else as written: stream order)."""
    n = len(next(iter(blocks.values())))
    if "doc" not in blocks:
        return np.arange(n)
    return np.lexsort((blocks["pos"], blocks["doc"])) if "pos" in blocks else np.argsort(blocks["doc"], kind="stable")


def ratio(run: Run, key: str, side: str = "tuned") -> stats.Ratio | None:
    """The `side` model's `key` as a ratio over the run's units (blocks, or examples for a classifier),
    in stream order, with their document ids when blocks.csv records them."""
    b = run.blocks
    if not b:
        return None
    order = stream_order(b)
    b = {k: v[order] for k, v in b.items()}
    doc = b.get("doc")
    if key == "perplexity" and {f"{side}_nll", "n_tokens"} <= set(b):
        return stats.Ratio(b[f"{side}_nll"], b["n_tokens"], "exp", doc)
    if key == "bits_per_byte" and {f"{side}_nll", "n_bytes"} <= set(b):
        return stats.Ratio(b[f"{side}_nll"] / LN2, b["n_bytes"], "identity", doc)
    if key == "accuracy" and {f"{side}_pred", "label"} <= set(b):
        examples = np.arange(len(b["label"])) if doc is None else doc  # separate records: independent
        return stats.Ratio((b[f"{side}_pred"] == b["label"]).astype(float), np.ones(len(b["label"])), "identity", examples)
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
    vs_ref: stats.Comparison | None = None       # against the reference run (the best, or --against)
    vs_base_cmp: stats.Comparison | None = None  # the tuned model against its base, paired
    ratio: stats.Ratio | None = field(default=None, repr=False)

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
    reference: Row | None = None          # what the verdicts compare with
    against: bool = False                 # the user named the reference (--against)
    detectable: float | None = None       # smallest change the validation set can call (% or points)
    # lm-evaluation-harness rows (lmtune.report.harness.table): (header, one row per run and harness task)
    harness: tuple[list[str], list[list[str]]] = (harness.HEADER, [])

    @property
    def change_unit(self) -> str:
        """Changes of an accuracy-like metric are in points, of perplexity and bits per byte in %."""
        return "pp" if self.higher_is_better else "%"


def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _one_task(runs: list[Run], skipped) -> tuple[str, list[Run], list[str]]:
    """The first run's task and its runs (their metrics compare); notes for the others left out."""
    if not runs:
        raise UserError("compare: no run has metrics/eval.json yet (run `dvc repro` or `dvc exp run` first)")
    task = runs[0].task
    notes = [f"left out: {s}" for s in skipped]
    notes += [f"left out: {r.name}: task {r.task}, not {task}" for r in runs if r.task != task]
    return task, [r for r in runs if r.task == task], notes


def _ranking(task: str, runs: list[Run]) -> tuple[str, bool, list[str]]:
    """(metric, higher is better, header lines): perplexity per token only between runs on the same tokens."""
    ranks = tasks.ranking(tasks.get(task))
    key, hib = ranks.key, ranks.higher_is_better
    if key != "perplexity":
        return key, hib, []
    same = same_tokens(runs)
    if same is False and all("bits_per_byte" in r.eval["tuned"] for r in runs):
        return "bits_per_byte", False, [
            "ranked by bits per byte, not perplexity: the runs scored different validation tokens "
            "(another tokenizer or other validation data), so perplexity per token is not comparable"]
    if same is False:
        return key, hib, ["warning: the runs scored different validation tokens and have no bits_per_byte; "
                          "their perplexities are not comparable"]
    return key, hib, []


def _row(members: list[Run], key: str, hib: bool) -> Row:
    vals = [m.eval["tuned"][key] for m in members]
    value, spread = stats.mean_spread(vals)
    bases = [m.eval.get("base", {}).get(key) for m in members]
    if any(b is None for b in bases):
        vs = None
    elif hib:  # accuracy-like: change in points
        vs = _mean([(v - b) * 100 for v, b in zip(vals, bases)])
    else:
        vs = _mean([(v / b - 1) * 100 for v, b in zip(vals, bases)])
    return Row(members, value, spread, base=_mean(bases), vs_base=vs,
               extra=_mean([m.eval["tuned"].get(EXTRA[key]) for m in members]),
               train_s=_mean([m.timing.get("wall_time_s") for m in members]),
               tokens_per_s=_mean([m.timing.get("tokens_per_second") for m in members]))


def _group_ratio(members: list[Run], key: str, side: str = "tuned") -> stats.Ratio | None:
    parts = [ratio(m, key, side) for m in members]
    return stats.Ratio.group(parts) if all(parts) else None


def _mismatched_blocks(runs: list[Run], key: str) -> list[str]:
    """The per-unit file must be the one eval.json was computed from."""
    notes = []
    for r in runs:
        part = ratio(r, key)
        if part is not None and not math.isclose(part.value(), r.eval["tuned"][key], rel_tol=1e-6):
            notes.append(f"warning: {r.name}: {rel(paths.BLOCKS)} gives {LABELS[key]} {part.value():.6g}, "
                         f"{rel(paths.EVAL_METRICS)} {r.eval['tuned'][key]:.6g}: not from the same evaluation")
    return notes


def _reference(rows: list[Row], against: str | None) -> Row:
    if against is None:
        return rows[0]
    hits = [row for row in rows if any(matches(m, against) for m in row.runs)]
    if not hits:
        raise UserError(f"compare: --against {against!r} names none of the runs compared: "
                        f"{', '.join(m.name for row in rows for m in row.runs)}")
    return hits[0]


def _paired(task: str, members: list[Run]) -> bool:
    # The task's shared block columns (an LM block's token and byte counts, a classifier's labels) say
    # whether two runs scored the same units.
    keys = tasks.get(task).block_columns[0]
    return all(stats.same_units(members[0].blocks, m.blocks, keys) for m in members)


def _compare_rows(report: Report, task: str, level: float, n_boot: int, seed: int) -> None:
    """Each row against the reference (its verdict), and its tuned model against its base model."""
    ref = report.reference
    for row in report.rows:
        if row.ratio is None:
            continue
        base = _group_ratio(row.runs, report.key, "base")
        if base is not None:
            row.vs_base_cmp = stats.compare(row.ratio, base, report.higher_is_better, _paired(task, row.runs),
                                            n_boot=n_boot, seed=seed)
        if row is ref:
            row.verdict = "reference" if report.against else "best"
        elif ref.ratio is not None:
            row.vs_ref = stats.compare(row.ratio, ref.ratio, report.higher_is_better, _paired(task, row.runs + ref.runs),
                                       level, n_boot, seed)
            row.verdict = row.vs_ref.verdict
    if not report.against and report.rows[0].verdict == "n/a":
        report.rows[0].verdict = "best"


def change(c: stats.Comparison, higher_is_better: bool, sd: float | None = None) -> tuple[float, float, float]:
    """(change, low, high) of a comparison as shown: points for accuracy-like metrics, % otherwise."""
    if higher_is_better:
        return c.diff * 100, c.low * 100, c.high * 100
    return c.rel * 100, c.rel_low * 100, c.rel_high * 100


def detectable(c: stats.Comparison, higher_is_better: bool) -> float:
    """The smallest change this comparison's design can call with 80% power at its level, shown as change()."""
    if higher_is_better:
        return stats.detectable(c.sd, c.level, df=c.df) * 100
    return math.expm1(stats.detectable(c.sd_log, c.level, df=c.df)) * 100


def analyse(runs: list[Run], skipped: list[str] = (), seed: int = stats.BOOT_SEED,
            n_boot: int = stats.N_BOOT, against: str | None = None) -> Report:
    task, runs, notes = _one_task(runs, skipped)
    key, hib, header = _ranking(task, runs)
    configs = {r.name: r.params for r in runs}
    groups = [[next(r for r in runs if r.name == n) for n in g] for g in stats.seed_groups(configs)]
    rows = sorted((_row(g, key, hib) for g in groups), key=lambda r: (-r.value if hib else r.value, r.name))
    notes += _mismatched_blocks(runs, key)
    for row in rows:
        row.ratio = _group_ratio(row.runs, key)
        if row.ratio is not None:
            _, row.low, row.high = stats.interval(row.ratio, n_boot=n_boot, seed=seed)
    report = Report(task, key, hib, rows, stats.differing(configs), header, notes,
                    _reference(rows, against), against is not None)
    # Against the best, picked from these same numbers: each of the k-1 verdicts at 1 - 0.05/(k-1)
    # (Bonferroni), so that all of them together say better/worse falsely in at most 5% of cases.
    level = stats.LEVEL if against else 1 - (1 - stats.LEVEL) / max(1, len(rows) - 1)
    _compare_rows(report, task, level, n_boot, seed)
    report.notes += explain(report, runs, n_boot, seed)
    h_head, h_rows, h_notes = harness.table([(m.name, m.harness) for row in rows for m in row.runs])
    report.harness, report.notes = (h_head, h_rows), report.notes + h_notes
    return report


# ---- notes under the table: what every number accounts for ------------------------------------------

def _units(runs: list[Run]) -> str:
    with_blocks = [r.blocks for r in runs if r.blocks]
    return "examples" if with_blocks and "label" in with_blocks[0] else "validation blocks"


def _method_notes(report: Report, runs: list[Run], n_boot: int, seed: int) -> list[str]:
    """Which resampling compare used and why, and how an interval is built from it."""
    units = _units(runs)
    plans = {row.ratio.resampling().describe(units): row.ratio.resampling() for row in report.rows if row.ratio}
    if not plans:
        return []
    why = {
        "documents": f"{units} of one document share its topic and speaker",
        "stream blocks": f"{rel(paths.BLOCKS)} names no documents (or under {stats.MIN_DOCS}), so neighbours, which "
                         "share a document's topic, move together; assumes the correlation is short-range",
        "units": f"{units} are separate records",
    }
    out = [f"intervals: {desc}: {why[plan.method]}" for desc, plan in plans.items()]
    out.append(f"[95% CI], verdicts: estimate ± t(df) × bootstrap sd, df = draws - 1 ({n_boot} resamples, seed "
               f"{seed}: same inputs, same numbers)")
    return out


def _verdict_notes(report: Report) -> list[str]:
    comps = [row.vs_ref for row in report.rows if row.vs_ref]
    if not comps:
        return []
    ref = report.reference.name
    if report.against:
        head = f"verdicts vs {ref} (--against), at {comps[0].level:.0%} each"
    else:
        head = (f"verdicts vs the best ({ref}), at {comps[0].level:.1%} each (Bonferroni over {len(comps)}): the best "
                "was picked from these numbers; --against NAME: vs a baseline you name, at 95%")
    kinds = "; ".join(sorted({c.noise for c in comps}))
    if any(len(row.runs) > 1 for row in report.rows):
        seeds = "training noise only in ×k rows (seeds resampled, their spread scaled by k/(k-1))"
    else:
        seeds = "not training noise (what the seed changes): measure it with a few -S seed=N runs of one config"
    return [head, f"noise covered: {kinds}; {seeds}"]


def _detectable_notes(report: Report, runs: list[Run]) -> list[str]:
    """The smallest change the validation set can call, and the runs closer to the reference than that."""
    comps = [(row, row.vs_ref) for row in report.rows if row.vs_ref and row.vs_ref.paired]
    between = "between runs"
    if not comps:
        comps = [(row, row.vs_base_cmp) for row in report.rows if row.vs_base_cmp]
        between = "between the tuned model and its base; two tuned runs differ less noisily"
    if not comps:
        return []
    hib, unit = report.higher_is_better, report.change_unit
    report.detectable = float(np.median([detectable(c, hib) for _, c in comps]))
    n = sorted({r.ratio.n_units for r in report.rows if r.ratio and r.ratio.n_units})
    what = f"{'/'.join(map(str, n))} {_units(runs)}"
    out = [f"smallest detectable change: {report.detectable:.1f}{unit} in {LABELS[report.key]} on these {what} "
           f"({between}; 80% power, verdicts' level); more documents or all blocks buy resolution (README: "
           "'How small a difference can compare see?')"]
    close = [f"{row.name} ({fmt_change(change(c, hib)[0], unit)})" for row, c in comps
             if row.vs_ref is c and c.verdict == "within noise" and abs(change(c, hib)[0]) < report.detectable]
    if close:
        out.append(f"closer to {report.reference.name} than that: {', '.join(close)}: this validation set cannot "
                   "tell them apart ('within noise' does not mean equal)")
    return out


def _group_notes(report: Report) -> list[str]:
    out = []
    for row in report.rows:
        if len(row.runs) < 2:
            continue
        names = ", ".join(m.name for m in row.runs)
        seeds = [m.params.get("seed") for m in row.runs]
        if len(set(map(repr, seeds))) == 1:
            kind = "repeats of one config (identical params, seed included): the spread is run-to-run nondeterminism"
        elif len(set(map(repr, seeds))) < len(seeds):
            kind = f"differ only in seed ({', '.join(map(str, seeds))}: some are repeats)"
        else:
            kind = "differ only in seed"
        out.append(f"{row.name}: {names} {kind}; {LABELS[report.key]} = mean ± sd over them")
    return out


def explain(report: Report, runs: list[Run], n_boot: int, seed: int) -> list[str]:
    notes = _method_notes(report, runs, n_boot, seed) + _verdict_notes(report) + _detectable_notes(report, runs)
    without = [r.name for r in runs if not r.blocks]
    if without:
        notes.append(f"no interval or verdict for {', '.join(without)}: no {rel(paths.BLOCKS)} at that revision "
                     "(evaluated before evaluate wrote per-block numbers)")
    notes += _group_notes(report)
    bases = {r.base for r in report.rows if r.base is not None}
    if len(bases) == 1:
        notes.append(f"base model {LABELS[report.key]}: {fmt_metric(bases.pop(), report.key)} "
                     "(vs base: change of the tuned model)")
    if len({r.base_model for r in runs}) > 1:
        notes.append("base models differ between runs (models/base hash)")
    return notes


def report_json(report: Report) -> dict:
    def cmp(c):
        return None if c is None else {"diff": c.diff, "low": c.low, "high": c.high, "rel": c.rel, "rel_low": c.rel_low,
                                       "rel_high": c.rel_high, "level": c.level, "paired": c.paired, "noise": c.noise}

    return {
        "task": report.task, "ranked_by": report.key, "higher_is_better": report.higher_is_better,
        "changed_params": report.params, "header": report.header, "notes": report.notes,
        "reference": report.reference.name if report.reference else None, "against": report.against,
        "detectable_change": report.detectable, "change_unit": report.change_unit,
        "harness": {"header": report.harness[0], "rows": report.harness[1]},
        "rows": [{
            "name": r.name, "runs": [{"name": m.name, "rev": m.rev, "params": {p: m.params.get(p) for p in report.params},
                                      "tuned": m.eval["tuned"], "base": m.eval.get("base")} for m in r.runs],
            "value": r.value, "spread": r.spread, "low": r.low, "high": r.high, "base": r.base, "vs_base": r.vs_base,
            "verdict": r.verdict, "vs_reference": cmp(r.vs_ref), "vs_base_interval": cmp(r.vs_base_cmp),
            "train_s": r.train_s, "tokens_per_s": r.tokens_per_s,
        } for r in report.rows],
    }
