"""Saved datasets: save_tables writes exactly what datasets' save_to_disk + save_dataset would, and
every save carries a content fingerprint (same rows -> same bytes -> same DVC hash)."""
import json
from pathlib import Path

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


def test_save_tables_into_new_parents_or_an_existing_folder(tmp_path):
    save_tables(small_tables(), tmp_path / "a" / "b" / "chunks")
    (tmp_path / "c").mkdir()
    save_tables(small_tables(), tmp_path / "c")  # the folder atomic_dir hands over exists already
    assert tree(tmp_path / "a" / "b" / "chunks") == tree(tmp_path / "c")


def test_atomic_dir_replaces_the_target_on_success_only(tmp_path):
    from lmtune.io import atomic_dir

    target = tmp_path / "deep" / "out"  # parents made as needed
    with atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.tmp-") and not any(tmp.iterdir())
        (tmp / "a").write_text("1")
    assert _snapshot(target) == {"a": b"1"}
    with pytest.raises(KeyError), atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
        raise KeyError("failed")
    assert _snapshot(target) == {"a": b"1"} and sorted(p.name for p in target.parent.iterdir()) == ["out"]
    with atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
    assert _snapshot(target) == {"c": b"3"} and sorted(p.name for p in target.parent.iterdir()) == ["out"]


def test_fingerprints_hash_names_only_with_a_root(tmp_path):
    from lmtune.io import files_fingerprint, folder_fingerprint

    (tmp_path / "d").mkdir()
    for name, data in (("ab", b"c"), ("a", b"bc"), ("x", b"bc")):
        (tmp_path / "d" / name).write_bytes(data)
    d = tmp_path / "d"
    fp = files_fingerprint([d / "ab"])
    assert len(fp) == 16 and int(fp, 16) >= 0
    # Without a root only the bytes count: same bytes under another name, same hash; "ab"+"c" is "a"+"bc" too.
    assert files_fingerprint([d / "a"]) == files_fingerprint([d / "x"]) != files_fingerprint([d / "ab"])
    # Split differently ("ab" + "c" against "a" + "bc") or renamed ("a" against "x"), with the root: different.
    assert len({files_fingerprint([d / n], d) for n in ("ab", "a", "x")}) == 3
    big = d / "big"
    big.write_bytes(bytes(range(256)) * 8192)  # 2 MiB: read in several 1 MiB pieces, each hashed
    other = tmp_path / "other"
    other.write_bytes(bytes(range(256)) * 4096 + b"\0" + bytes(range(256)) * 4096)
    assert files_fingerprint([big]) != files_fingerprint([other])
    assert files_fingerprint([big]) == files_fingerprint([big])
    import xxhash

    assert files_fingerprint([big]) == xxhash.xxh3_128(big.read_bytes()).hexdigest()[:16]
    # With a root: each file's relative name, after its length as 8 little-endian bytes, then its bytes.
    h = xxhash.xxh3_128()
    for name in ("ab", "x"):
        h.update(len(name).to_bytes(8, "little") + name.encode() + (d / name).read_bytes())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a line-buffered binary open warns
        assert files_fingerprint([d / "ab", d / "x"], d) == h.hexdigest()[:16]
    # A folder: every file under it by name (subfolders too); a file: itself with its name.
    sub = d / "s"
    sub.mkdir()
    (sub / "y").write_bytes(b"y")
    files = sorted(p for p in d.rglob("*") if p.is_file())
    assert folder_fingerprint(d) == files_fingerprint(files, d)
    assert folder_fingerprint(d / "ab") == files_fingerprint([d / "ab"], d)


def test_save_dataset_stamps_a_content_fingerprint(tmp_path):
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1, 2, 3]})})
    save_dataset(ds, tmp_path / "a")
    save_dataset(datasets.DatasetDict({"train": datasets.Dataset.from_dict({"x": [1, 2, 4]})}), tmp_path / "b")
    from lmtune.io import files_fingerprint

    state_text = (tmp_path / "a" / "train" / "state.json").read_text()
    state = json.loads(state_text)
    assert state["_fingerprint"] == files_fingerprint(tmp_path / "a" / "train" / f["filename"] for f in state["_data_files"])
    assert state_text == json.dumps(state, indent=2, sort_keys=True)
    assert state["_fingerprint"] != json.loads((tmp_path / "b" / "train" / "state.json").read_text())["_fingerprint"]


def test_sweep_temps_puts_a_killed_runs_old_output_back(tmp_path):
    from lmtune.io import sweep_temps

    sweep_temps(tmp_path / "nowhere" / "out")  # no parent: nothing to do
    target = tmp_path / "out"
    (tmp_path / ".out.old-7").mkdir()
    (tmp_path / ".out.old-7" / "w").write_text("previous")
    (tmp_path / ".out.tmp-abc").mkdir()
    (tmp_path / ".out.tmp-abc" / "w").write_text("half")
    (tmp_path / ".out.tmp-file").write_text("half")
    (tmp_path / ".other.tmp-x").write_text("not ours")
    sweep_temps(target)
    assert _snapshot(target) == {"w": b"previous"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-x", "out"]
    (tmp_path / ".out.old-8").write_text("stale")  # the target is there: an old one is only removed
    sweep_temps(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.tmp-x", "out"] and _snapshot(target) == {"w": b"previous"}


def test_commit_all_replaces_a_symlink_and_files(tmp_path):
    from lmtune.io import commit_all

    (tmp_path / "real").write_text("real")
    (tmp_path / "link").symlink_to(tmp_path / "gone")  # dangling: exists() is False, the link is still a target
    (tmp_path / "f").write_text("old")
    (tmp_path / ".link.tmp").write_text("new link")
    (tmp_path / ".f.tmp").write_text("new f")
    commit_all([(tmp_path / ".link.tmp", tmp_path / "link"), (tmp_path / ".f.tmp", tmp_path / "f")])
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "link").read_text() == "new link"
    assert (tmp_path / "f").read_text() == "new f"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "link", "real"]


def test_staged_outputs_of_the_other_processes_only_name_the_temps(tmp_path):
    from lmtune.io import staged_path

    targets = _outputs(tmp_path)
    old = _snapshot(tmp_path)
    assert staged_path(tmp_path / "model") == tmp_path / ".model.tmp-staged"
    with staged_outputs(*targets, commit=False) as temps:
        assert temps == [tmp_path / ".model.tmp-staged", tmp_path / ".m.json.tmp-staged"]
    assert _snapshot(tmp_path) == old  # nothing written: no error, nothing committed
    (tmp_path / ".m.json.tmp-staged").write_text("by rank 0")
    with pytest.raises(ValueError), staged_outputs(*targets, commit=False):
        raise ValueError("rank 1 failed")
    assert (tmp_path / ".m.json.tmp-staged").exists()  # the committing process cleans up, not this one
    with staged_outputs(tmp_path / "new" / "x.json") as (temp,):  # a missing parent is made
        temp.write_text("{}")
    assert (tmp_path / "new" / "x.json").read_text() == "{}"


def test_json_and_text_writes_are_sorted_indented_and_utf8(tmp_path):
    import os
    import stat

    from lmtune.io import atomic_write_json, atomic_write_text

    write_json(tmp_path / "a.json", {"b": 1, "a": "é"})
    assert (tmp_path / "a.json").read_bytes() == b'{\n  "a": "\\u00e9",\n  "b": 1\n}\n'
    atomic_write_json(tmp_path / "sub" / "deeper" / "b.json", {"b": 1, "a": [1]})
    assert (tmp_path / "sub" / "deeper" / "b.json").read_bytes() == b'{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'
    atomic_write_text(tmp_path / "c.txt", "Café")
    assert (tmp_path / "c.txt").read_bytes() == "Café".encode("utf-8")
    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "d.txt", "x")
        assert os.umask(0o027) == 0o027  # the umask is left as it was
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "d.txt").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "c.txt", "d.txt", "sub"]


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    from lmtune import io

    (tmp_path / "f").write_bytes(b"old")

    def refuse(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        io.atomic_write_bytes(tmp_path / "f", b"new")
    assert (tmp_path / "f").read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_atomic_write_goes_through_a_sibling_temp(tmp_path, monkeypatch):
    from lmtune import io

    renames, real = [], io.os.replace
    monkeypatch.setattr(io.os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))), real(src, dst))[1])
    io.atomic_write_bytes(tmp_path / "f.bin", b"x")
    (src, dst), = renames
    # Beside the target under the name sweep_temps removes after a crash.
    assert dst == tmp_path / "f.bin" and src.parent == tmp_path and src.name.startswith(".f.bin.tmp-")


def test_stale_temps_that_cannot_be_removed_do_not_stop_a_stage(tmp_path, monkeypatch):
    """shutil.rmtree raises on what it cannot remove (a file held open on some filesystems, permissions)
    unless told to ignore errors: leftovers of a killed run must never fail the next one."""
    from lmtune import io

    def rmtree(path, ignore_errors=False):
        if not ignore_errors:
            raise OSError(f"cannot remove {path}")

    (tmp_path / ".out.tmp-1").mkdir()
    (tmp_path / "dir").mkdir()
    monkeypatch.setattr(io.shutil, "rmtree", rmtree)
    io.sweep_temps(tmp_path / "out")
    io._remove(tmp_path / "dir")


def test_an_undo_that_fails_too_still_raises_the_first_error(tmp_path, monkeypatch):
    """Every rename from the third on fails (the disk went away): the first error is the one raised."""
    import os

    from lmtune import io

    targets = _outputs(tmp_path)
    real, count = os.replace, [0]

    def failing(src, dst):
        count[0] += 1
        if count[0] >= 3:
            raise OSError(f"disk gone ({count[0]})")
        return real(src, dst)

    monkeypatch.setattr(io.os, "replace", failing)
    with pytest.raises(OSError, match=r"^disk gone \(3\)$"), staged_outputs(*targets) as temps:
        _write_new(temps)
