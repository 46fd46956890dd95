"""One model's evaluation (base or tuned) on the validation examples, and the per-block files.

The base model is measured by its own stage (`evaluate_base`), cached by DVC: an experiment that changes
only `train.*` reuses it. `evaluate` measures the tuned model and puts both side by side.
Per-block rows (metrics/blocks_base.csv, metrics/blocks.csv) let comparisons pair runs on the same blocks.
"""
import csv
import io
from pathlib import Path

from lmtune import device, paths
from lmtune.errors import UserError
from lmtune.models import loading, lora


def evaluate(task, which: str) -> tuple[dict, dict]:
    """(metrics, per-block columns) of the base or the tuned model, on the device `train.precision` picks."""
    import datasets
    from transformers import AutoTokenizer

    p = task.p
    placement = device.current(p.train.precision)
    validation = datasets.load_from_disk(paths.CHUNKS)["validation"]
    ids = unit_ids(task, validation.column_names)
    where = {c: validation.data.column(c).to_pylist() for c in ids}
    blocks = validation.remove_columns(list(ids)).with_format("torch")  # the model sees no ids
    if which == "base":
        model = loading.load_model(paths.BASE, task.head, p.seed, **task.model_kwargs())
    else:  # plain weights, or base + LoRA adapter merged
        model = lora.load_tuned(paths.FINAL, paths.BASE, task.head, p.seed, **task.model_kwargs())
    model.to(placement.device)
    tokenizer = AutoTokenizer.from_pretrained(paths.BASE)
    m = task.evaluate(model, blocks, tokenizer=tokenizer, autocast=placement.autocast, desc=f"evaluate {which}")
    return m, {**where, **m.pop("blocks")}


# Where each validation unit came from, as data/chunks records it (lmtune.data.chunking, lmtune.data.examples):
# the document (or example) and the position in the stream. Copied into the per-block files for compare's
# document bootstrap, never given to the model.
UNIT_IDS = ("doc", "pos")


def unit_ids(task, chunk_columns: list[str]) -> tuple[str, ...]:
    """The id columns the task's per-block files carry; an error when data/chunks predates them."""
    ids = tuple(c for c in task.block_columns[0] if c in UNIT_IDS)
    if missing := [c for c in ids if c not in chunk_columns]:
        raise UserError(f"{paths.CHUNKS.relative_to(paths.ROOT)}: the validation split has no {', '.join(missing)} "
                        "column (chunked before blocks recorded their documents); run `dvc repro chunk`")
    return ids


def confusion_csv(m: dict) -> str:
    """metrics/confusion.csv (a DVC plot) from one model's numbers: one `actual,predicted` row per example
    (DVC's confusion template counts rows), classes named as in its `support`; header only without a
    confusion matrix (the language-model tasks)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["actual", "predicted"])
    names = list(m.get("support", {}))
    for i, row in enumerate(m.get("confusion_matrix", [])):
        for j, count in enumerate(row):
            w.writerows([[names[i], names[j]]] * int(count))
    return buf.getvalue()


def blocks_csv(task, columns: dict[str, dict]) -> str:
    """`block`, the shared columns, then `<model>_<column>` for each model in `columns` (model -> blocks)."""
    shared, per_model = task.block_columns
    first = next(iter(columns.values()))
    header = ["block", *shared, *[f"{m}_{c}" for m in columns for c in per_model]]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for i in range(len(first[per_model[0]])):
        # repr-exact floats: the rows must sum back to the metrics' totals
        w.writerow([i, *[first[c][i] for c in shared], *[columns[m][c][i] for m in columns for c in per_model]])
    return buf.getvalue()


def read_blocks(path: Path, task, model: str) -> dict:
    """The shared and `model`'s columns of a blocks csv, as lists (ints and floats as written)."""
    shared, per_model = task.block_columns
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    num = lambda v: float(v) if any(ch in v for ch in ".en") else int(v)  # noqa: E731 ("nan", "1e-05" are floats)
    out = {c: [num(r[c]) for r in rows] for c in shared}
    out.update({c: [num(r[f"{model}_{c}"]) for r in rows] for c in per_model})
    return out


def same_blocks(task, base: dict, tuned: dict) -> None:
    """The base rows were measured on these validation blocks (else evaluate_base is stale)."""
    shared, per_model = task.block_columns
    if any(base[c] != tuned[c] for c in shared) or len(base[per_model[0]]) != len(tuned[per_model[0]]):
        raise UserError(f"{paths.BLOCKS_BASE.relative_to(paths.ROOT)} was measured on other validation blocks; "
                        "run `dvc repro evaluate_base`")
