"""The one formatter of evaluation numbers: every console line, card table and model-index entry is derived
from a task's metric declarations (`lmtune.tasks.base.Metric`: key, label, format, direction, hub id).

Scores come first in declaration order; a count (`higher_is_better` None, e.g. tokens scored) closes a
console line in parentheses and is the last column of a table. `lmtune.cli.compare` keeps its own label
and decimals tables for now; its columns can come from the same declarations through `value`.
"""


def value(metric, v) -> str:
    """One number as the task declares it (e.g. perplexity ".2f", a count "d")."""
    return format(v, metric.fmt)


def _scores(task):
    return [m for m in task.metrics if m.higher_is_better is not None]


def _counts(task):
    return [m for m in task.metrics if m.higher_is_better is None]


def console_line(task, name: str, m: dict) -> str:
    """`tuned loss 3.1234  perplexity 22.81  next-token accuracy 0.3012  (1572 tokens)`."""
    scores = "  ".join(f"{x.label} {value(x, m[x.key])}" for x in _scores(task))
    counts = ", ".join(f"{value(x, m[x.key])} {x.label}" for x in _counts(task))
    return f"{name:5s} {scores}" + (f"  ({counts})" if counts else "")


def markdown_table(task, ev: dict[str, dict]) -> list[str]:
    """Markdown rows of metrics/eval.json (one row per model) for the model card."""
    cols = [*_scores(task), *_counts(task)]
    return ["| model | " + " | ".join(c.label for c in cols) + " |", "|---" * (len(cols) + 1) + "|",
            *[f"| {name} | " + " | ".join(value(c, m[c.key]) for c in cols) + " |" for name, m in ev.items()]]


def model_index(task, m: dict) -> list[dict]:
    """One model's numbers for the card's model-index: dicts of `type` (the hub's metric id), `name`, `value`
    (4 decimals) and optional `args`, as huggingface_hub's EvalResult takes them."""
    out = []
    for x in task.metrics:
        if x.hub:
            entry = {"type": x.hub[0], "name": x.hub[1], "value": round(m[x.key], 4)}
            out.append({**entry, "args": dict(x.hub_args)} if x.hub_args else entry)
    return out
