"""flatten: each record of the raw dataset becomes one `text` (nested fields joined)."""
import datasets

from lmtune import params, paths, text
from lmtune.errors import UserError, cli
from lmtune.io import atomic_dir


@cli
def main() -> None:
    p = params.load().flatten
    datasets.disable_caching()  # map results go to a temp dir, never beside data/raw (another stage's out)
    raw = datasets.load_from_disk(paths.RAW)
    flat = {}
    for split, ds in raw.items():
        text.check_columns(ds.column_names, p.text_fields, f"data/raw {split}")
        out = ds.map(lambda r: {"text": text.flatten_record(r, p.text_fields, p.joiner)}, remove_columns=ds.column_names)
        if p.drop_empty:
            out = out.filter(lambda r: bool(r["text"].strip()))
        if len(out) == 0:
            raise UserError(f"data/raw {split}: no non-empty text in fields {p.text_fields}")
        flat[split] = out
    with atomic_dir(paths.FLAT) as tmp:
        datasets.DatasetDict(flat).save_to_disk(tmp)
    print(f"flatten: {', '.join(f'{k} {len(v)} documents' for k, v in flat.items())}")


if __name__ == "__main__":
    main()
