"""flatten: each raw record becomes the task's columns: `text` (nested fields joined) for causal LM,
`prompt` + `response` for instruction tuning, `text` (+ `text_pair`) + `label` for classification."""
import datasets

from lmtune import params, paths, tasks
from lmtune.data import text
from lmtune.errors import UserError, cli
from lmtune.io import atomic_dir, save_dataset


@cli
def main() -> None:
    all_params = params.load()
    p, task = all_params.flatten, tasks.get(all_params.task)
    datasets.disable_caching()  # map results go to a temp dir, never beside data/raw (another stage's out)
    raw = datasets.load_from_disk(paths.RAW)
    fields = task.source_fields(p)
    flat = {}
    for split, ds in raw.items():
        text.check_columns(ds.column_names, fields, f"data/raw {split}")
        out = ds.map(lambda r: task.flatten_record(p, r), remove_columns=ds.column_names)
        if p.drop_empty:
            out = out.filter(lambda r: task.keep_flat(r))
        if len(out) == 0:
            raise UserError(f"data/raw {split}: no non-empty text in fields {fields}")
        flat[split] = out
    with atomic_dir(paths.FLAT) as tmp:
        save_dataset(datasets.DatasetDict(flat), tmp)
    print(f"flatten: {', '.join(f'{k} {len(v)} documents' for k, v in flat.items())}")


if __name__ == "__main__":
    main()
