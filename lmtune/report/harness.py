"""metrics/harness.json (lm-evaluation-harness, base beside tuned) as table rows and notes for `make compare`.

compare reads each run's metrics/harness.json from `dvc exp show --json` (as it reads metrics/eval.json) and
passes `[(run name, that dict or None), ...]` to `table`; it prints the rows under its own table and adds the
notes to its own. Pure: no files, no lm_eval import.
"""
# The number shown per task, first found: bits per byte for the rolling log-likelihood tasks (comparable across
# tokenizers), normalised then plain accuracy for multiple-choice hub tasks, perplexity for lambada-style ones.
HEADLINE = ("bits_per_byte", "acc_norm", "acc", "exact_match", "perplexity", "word_perplexity")
HEADER = ["run", "harness task", "metric", "base", "tuned", "change"]


def headline(metrics: dict) -> str | None:
    for name in HEADLINE:
        if (metrics.get(name) or {}).get("value") is not None:
            return name
    return next((name for name, m in metrics.items() if m.get("value") is not None), None)


def fmt(m: dict | None) -> str:
    """`value ± stderr` (4 significant digits, stderr 2), `value` alone where the harness gives no stderr."""
    if not m or m.get("value") is None:
        return "-"
    return f"{m['value']:.4g}" + (f" ± {m['stderr']:.2g}" if m.get("stderr") is not None else "")


def change(base: dict | None, tuned: dict | None) -> str:
    if not base or not tuned or base.get("value") in (None, 0) or tuned.get("value") is None:
        return "-"
    return f"{(tuned['value'] - base['value']) / abs(base['value']):+.1%}"


def table(runs: list[tuple[str, dict | None]]) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes): per run and harness task one row, its headline metric for the base and the tuned
    model with the harness's stderr, and the relative change."""
    rows, notes, without, stderr_missing = [], [], [], set()
    settings = {}
    for name, h in runs:
        if not h:
            without.append(name)
            continue
        if "skipped" in h:
            notes.append(f"harness: {name}: skipped ({h['skipped']})")
            continue
        settings.setdefault((h.get("lm_eval_version"), repr(h.get("settings"))), []).append(name)
        base, tuned = h.get("base", {}), h.get("tuned", {})
        for task in sorted(set(base) | set(tuned)):
            b, t = (base.get(task) or {}).get("metrics", {}), (tuned.get(task) or {}).get("metrics", {})
            metric = headline(t) or headline(b)
            if metric is None:
                continue
            rows.append([name, task, metric, fmt(b.get(metric)), fmt(t.get(metric)), change(b.get(metric), t.get(metric))])
            if any((m.get(metric) or {}).get("stderr") is None for m in (b, t)):
                stderr_missing.add(metric)
    for (version, shown), names in settings.items():
        notes.append(f"harness: lm-eval {version}, settings {shown}" + (f" ({', '.join(names)})" if len(settings) > 1 else ""))
    if stderr_missing:
        notes.append(f"harness: no stderr for {', '.join(sorted(stderr_missing))}: lm-eval computes none for "
                     "corpus-level perplexity and bits per byte (not bootstrapped); raise harness.limit and compare "
                     "per document in metrics/harness_samples*.jsonl")
    if without:
        notes.append(f"harness: no metrics/harness.json for {', '.join(without)}")
    return HEADER, rows, notes
