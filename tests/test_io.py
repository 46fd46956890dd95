"""Saved datasets: save_tables writes exactly what datasets' save_to_disk + save_dataset would, and
every save carries a content fingerprint (same rows -> same bytes -> same DVC hash)."""
import json

import datasets
import numpy as np
import pyarrow as pa
import pytest

from lmtune.data import chunking
from lmtune.io import save_dataset, save_tables, staged_outputs, write_json


def tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def small_tables():
    blocks = chunking.blocks_table(np.arange(24, dtype=np.uint16).reshape(6, 4))
    labels = pa.table({"input_ids": blocks.column("input_ids"), "labels": pa.array(np.arange(6, dtype=np.int64))})
    return {"train": blocks, "validation": labels}


def test_save_tables_writes_what_save_to_disk_writes(tmp_path):
    # One record batch under 1,000 rows: save_to_disk writes it unchanged, so the two folders must be
    # byte-identical, file for file (dataset_dict.json, state.json, dataset_info.json, the Arrow stream).
    tables = small_tables()
    save_tables(tables, tmp_path / "ours")
    save_dataset(datasets.DatasetDict({k: datasets.Dataset(t) for k, t in tables.items()}), tmp_path / "theirs")
    assert tree(tmp_path / "ours") == tree(tmp_path / "theirs")


def test_saved_tables_load_back_with_their_record_batches(tmp_path):
    docs = pa.chunked_array([pa.array([[1, 2, 3], [4, 5]], type=pa.list_(pa.uint16())),
                             pa.array([[6, 7, 8, 9, 10, 11]], type=pa.list_(pa.uint16()))])
    blocks = chunking.concat_blocks(docs, 2)  # three record batches, one of them a straddling block
    assert blocks.column("input_ids").num_chunks == 3
    save_tables({"train": blocks}, tmp_path / "out")
    ds = datasets.load_from_disk(tmp_path / "out")["train"]
    assert ds.features["input_ids"] == datasets.List(datasets.Value("uint16"), length=2)
    assert np.asarray(ds.with_format("numpy")["input_ids"]).tolist() == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]


def test_fingerprints_follow_the_content(tmp_path):
    tables = small_tables()
    save_tables(tables, tmp_path / "a")
    save_tables(tables, tmp_path / "b")
    save_tables({"train": tables["train"].slice(1), "validation": tables["validation"]}, tmp_path / "c")
    fp = {d: json.loads((tmp_path / d / "train" / "state.json").read_text())["_fingerprint"] for d in "abc"}
    assert fp["a"] == fp["b"] != fp["c"]
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from lmtune.io import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.png", b"\x89PNG")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == 0o644  # not mkstemp's 0600
    assert (tmp_path / "a.png").read_bytes() == b"\x89PNG"


def _outputs(root):
    """An existing dir output and an existing file output, and what a run stages for each."""
    (root / "model").mkdir()
    (root / "model" / "w.bin").write_bytes(b"old weights")
    (root / "m.json").write_text('{"old": 1}\n')
    return [root / "model", root / "m.json"]


def _write_new(temps):
    model, metrics = temps
    model.mkdir()
    (model / "w.bin").write_bytes(b"new weights")
    (model / "extra.bin").write_bytes(b"x")
    write_json(metrics, {"new": 1})


def _snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_staged_outputs_commit_together(tmp_path):
    targets = _outputs(tmp_path)
    with staged_outputs(*targets) as temps:
        assert all(t.parent == tmp_path and not t.exists() for t in temps)
        _write_new(temps)
    assert _snapshot(tmp_path) == {"m.json": b'{\n  "new": 1\n}\n', "model/extra.bin": b"x", "model/w.bin": b"new weights"}


def test_staged_outputs_any_failed_rename_leaves_every_output_old(tmp_path, monkeypatch):
    """Refuse the n-th rename for every n: all outputs stay as they were, no temp or old copy is left."""
    import os

    from lmtune import io

    targets = _outputs(tmp_path)
    old = _snapshot(tmp_path)
    real, n, renames = os.replace, 0, [0]

    def refuse_nth(src, dst):
        renames[0] += 1
        if renames[0] == n:
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", refuse_nth)
    for n in range(1, 5):  # two aside, two in
        renames[0] = 0
        with pytest.raises(OSError, match="disk full"), staged_outputs(*targets) as temps:
            _write_new(temps)
        assert _snapshot(tmp_path) == old, n
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "model"], n
    renames[0], n = 0, 0
    with staged_outputs(*targets) as temps:
        _write_new(temps)
    assert renames[0] == 4 and _snapshot(tmp_path) != old


def test_staged_outputs_leave_everything_on_an_error_or_a_missing_output(tmp_path):
    targets = _outputs(tmp_path)
    old = _snapshot(tmp_path)
    with pytest.raises(ValueError), staged_outputs(*targets) as temps:
        _write_new(temps)
        raise ValueError("the stage failed")
    with pytest.raises(RuntimeError, match="nothing was written"), staged_outputs(*targets) as temps:
        temps[1].write_text("{}")  # the model never written
    assert _snapshot(tmp_path) == old and sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "model"]
