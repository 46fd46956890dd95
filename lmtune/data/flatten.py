"""Raw records -> the task's flat columns, per split, checked against the fields the task reads."""
import datasets

from lmtune.data import text
from lmtune.errors import UserError


def flatten(task, raw: datasets.DatasetDict) -> datasets.DatasetDict:
    """Every split mapped through `task.flatten_record`; with flatten.drop_empty, rows with nothing to
    learn from (`task.keep_flat`) dropped. A split left empty is one error naming it and the fields."""
    fields, drop_empty = task.source_fields(), task.p.flatten.drop_empty
    flat = {}
    for split, ds in raw.items():
        text.check_columns(ds.column_names, fields, f"data/raw {split}")
        out = ds.map(task.flatten_record, remove_columns=ds.column_names)
        if drop_empty:
            out = out.filter(task.keep_flat)
        if len(out) == 0:
            raise UserError(f"data/raw {split}: no non-empty text in fields {fields}")
        flat[split] = out
    return datasets.DatasetDict(flat)
