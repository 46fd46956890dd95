"""The checkpoint identity (lmtune.train.checkpoints): one function lists what a checkpoint depends on, and
the train stage resumes only from a checkpoint whose identity matches.

The slow test goes through `python -m stages.train` on a copy of the tiny pipeline: kill after the first
checkpoint, change one input, start the stage again and read its decision (resume or discard).
"""
import json
import shutil
import sys

import pytest
import yaml

from conftest import ROOT
from lmtune.cli.recipe import deep_update
from lmtune.params import validate
from lmtune.train import checkpoints
from repo_tools import FlushedStdout, copy_repo, kill_when, python_stage, run_until

CLASSIFIER = {"task": "classification", "chunk": {"mode": "pad"}, "classification": {"label_names": ["neg", "pos"]}}
LORA = {"lora": {"enabled": True}}
# Changes a checkpoint depends on: (params of the run that left it, params now, world size now).
CHANGES = {
    "task": ({}, {"task": "instruction"}, 1),
    "seed": ({}, {"seed": 7}, 1),
    "learning rate": ({}, {"train": {"learning_rate": 5e-4}}, 1),
    "label names": (CLASSIFIER, deep_update(CLASSIFIER, {"classification": {"label_names": ["neg", "neutral"]}}), 1),
    "label order": (CLASSIFIER, deep_update(CLASSIFIER, {"classification": {"label_names": ["pos", "neg"]}}), 1),
    "lora enabled": ({}, LORA, 1),
    "lora rank": (LORA, deep_update(LORA, {"lora": {"r": 4}}), 1),
    "lora alpha": (LORA, deep_update(LORA, {"lora": {"alpha": 32}}), 1),
    "lora dropout": (LORA, deep_update(LORA, {"lora": {"dropout": 0.0}}), 1),
    "lora targets": (LORA, deep_update(LORA, {"lora": {"target_modules": ["c_attn", "c_proj"]}}), 1),
    "lora head": (LORA, deep_update(LORA, {"lora": {"modules_to_save": ["score"]}}), 1),
    "world size": ({}, {}, 2),
}
# Changes a checkpoint does not depend on.
SAME = {
    "nothing": {},
    "evaluate and generate": {"evaluate": {"batch_size": 3}, "generate": {"max_new_tokens": 5}},
    "model card only": {"model": {"revision": "v2"}, "data": {"revision": "v2"}},
}


def params(over: dict):
    return validate(deep_update(yaml.safe_load((ROOT / "params.yaml").read_text()), over))


def folders(tmp_path):
    base, chunks = tmp_path / "base", tmp_path / "chunks"
    for d, name in ((base, "model.safetensors"), (chunks, "train/data-00000-of-00001.arrow")):
        (d / name).parent.mkdir(parents=True)
        (d / name).write_bytes(bytes(range(64)))
    return base, chunks


def fingerprint(over: dict, world_size: int, base, chunks) -> str:
    p = params(over)
    return checkpoints.fingerprint(checkpoints.identity(p, p.train, world_size, base, chunks))


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_identity_changes_with_what_a_checkpoint_depends_on(tmp_path, change):
    before, now, world_size = CHANGES[change]
    base, chunks = folders(tmp_path)
    assert fingerprint(before, 1, base, chunks) != fingerprint(now, world_size, base, chunks)


def test_identity_changes_with_the_bytes_and_names_of_base_and_chunks_and_the_launcher_config(tmp_path):
    base, chunks = folders(tmp_path)
    first = fingerprint({}, 1, base, chunks)
    assert fingerprint({}, 1, base, chunks) == first
    (base / "model.safetensors").write_bytes(bytes(range(63)) + b"\xff")  # one byte of the weights
    assert fingerprint({}, 1, base, chunks) != first
    (base / "model.safetensors").write_bytes(bytes(range(64)))
    (chunks / "train/data-00000-of-00001.arrow").rename(chunks / "train/other.arrow")  # same bytes, another name
    assert fingerprint({}, 1, base, chunks) != first
    (chunks / "train/other.arrow").rename(chunks / "train/data-00000-of-00001.arrow")
    assert fingerprint({}, 1, base, chunks) == first
    # The launcher's config (its distributed type shards the state): its content, under the same path
    # (read relative to the repo root, here tmp_path).
    p = params({"train": {"accelerate_config": "configs/accelerate/acc.yaml"}})
    (tmp_path / "configs/accelerate").mkdir(parents=True)
    (tmp_path / "configs/accelerate/acc.yaml").write_text("distributed_type: MULTI_GPU\n")
    ddp = checkpoints.identity(p, p.train, 1, base, chunks, root=tmp_path)
    (tmp_path / "configs/accelerate/acc.yaml").write_text("distributed_type: FSDP\n")
    assert checkpoints.identity(p, p.train, 1, base, chunks, root=tmp_path)["accelerate_config"] != ddp["accelerate_config"]


def test_identity_holds_the_planned_micro_batch(tmp_path):
    base, chunks = folders(tmp_path)
    p = params({"train": {"batch_size": 4, "gradient_accumulation_steps": 1, "auto_batch_size": True}})
    planned = p.train.model_copy(update={"batch_size": 2, "gradient_accumulation_steps": 2})
    assert checkpoints.identity(p, planned, 1, base, chunks) != checkpoints.identity(p, p.train, 1, base, chunks)


@pytest.mark.parametrize("change", sorted(SAME))
def test_identity_ignores_what_a_checkpoint_does_not_depend_on(tmp_path, change):
    base, chunks = folders(tmp_path)
    assert fingerprint(SAME[change], 1, base, chunks) == fingerprint({}, 1, base, chunks)


# --- Through the stage ---------------------------------------------------------------------------------

DECISION = ("resuming from", "discarding checkpoints")


@pytest.mark.slow
def test_train_stage_resumes_only_when_the_checkpoint_identity_matches(tiny_repro, tmp_path):
    """Kill `python -m stages.train` (LoRA on) right after checkpoint-4 of 8; then, from that same scratch,
    change one input at a time and start the stage again: every change to what the checkpoint was made
    from discards it (the message names the input), an unrelated param resumes it."""
    work = copy_repo(tiny_repro, tmp_path / "work")
    work.set_params(LORA)
    ckpts = work.path / "models/checkpoints"
    killed = kill_when(work, python_stage("train"), ckpts / "checkpoint-4" / "trainer_state.json")
    assert killed.returncode == -9, f"train finished before the kill:\n{killed.stdout[-2000:]}"
    scratch = tmp_path / "scratch"
    shutil.copytree(ckpts, scratch)
    params_yaml = (work.path / "params.yaml").read_bytes()
    weights = work.path / "models/base/model.safetensors"
    state = work.path / "data/chunks/train/state.json"
    originals = {f: f.read_bytes() for f in (weights, state)}

    def flip_last_byte(f):
        data = originals[f]
        f.unlink()  # a DVC output may be read-only or a link into the cache: write a new file
        f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))

    def flip_fingerprint_digit(f):  # one byte of the blocks' folder, still a valid dataset
        record = json.loads(originals[f])
        record["_fingerprint"] = ("1" if record["_fingerprint"][0] != "1" else "2") + record["_fingerprint"][1:]
        f.unlink()
        f.write_text(json.dumps(record, indent=2, sort_keys=True))

    cases = {
        "unrelated param": (lambda: work.set_params({"evaluate": {"batch_size": 3}, "generate": {"max_new_tokens": 5}}), None),
        "a byte of the base weights": (lambda: flip_last_byte(weights), "base"),
        "a byte of the chunks": (lambda: flip_fingerprint_digit(state), "chunks"),
        # (chunk.mode too, which instruction must have: the checkpoint depends on the chunks, not that param)
        # (and so the task's own params section, another one)
        "the task": (lambda: work.set_params({"task": "instruction", "chunk": {"mode": "pack"}}), "task, task_params"),
        "a LoRA field": (lambda: work.set_params({"lora": {"r": 4}}), "lora"),
    }
    for name, (change, named) in cases.items():
        shutil.rmtree(ckpts, ignore_errors=True)
        shutil.copytree(scratch, ckpts)
        (work.path / "params.yaml").write_bytes(params_yaml)
        for f, data in originals.items():
            f.unlink()
            f.write_bytes(data)
        change()
        out = run_until(work, python_stage("train"), DECISION)
        if named is None:
            assert "resuming from" in out and "checkpoint-4" in out and "discarding" not in out, (name, out[-3000:])
        else:
            line = next((l for l in out.splitlines() if "discarding checkpoints" in l), None)
            assert line and "resuming from" not in out, (name, out[-3000:])
            assert line.rstrip().endswith(f"made with different params or data ({named})"), (name, line)


# --- A killed run's scratch when DVC restores train instead of running it -----------------------------

def test_superseded_only_when_the_checkpoints_match_the_inputs_now(tmp_path):
    base, chunks = folders(tmp_path)
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    p = params({})
    assert checkpoints.superseded(p, ckpts, base, chunks)  # no stamp: killed before its first checkpoint
    (ckpts / checkpoints.FINGERPRINT).write_text(json.dumps({"identity": checkpoints.identity(p, p.train, 1, base, chunks)}))
    assert checkpoints.superseded(p, ckpts, base, chunks)
    assert checkpoints.superseded(params({"evaluate": {"batch_size": 3}}), ckpts, base, chunks)
    assert not checkpoints.superseded(params({"train": {"learning_rate": 5e-4}}), ckpts, base, chunks)
    assert not checkpoints.superseded(params(LORA), ckpts, base, chunks)
    (base / "model.safetensors").write_bytes(b"other weights")
    assert not checkpoints.superseded(p, ckpts, base, chunks)


@pytest.mark.slow
def test_a_killed_runs_scratch_goes_after_dvc_restores_train_from_the_run_cache(tiny_repro, tmp_path):
    """Kill `dvc repro` in train after checkpoint-4; `dvc repro` then restores train from the run-cache (the
    stage never runs, so its scratch stays); lmtune.cli.scratch (make repro runs it next) removes it."""
    from conftest import VENV_BIN

    work = copy_repo(tiny_repro, tmp_path / "work")
    ckpts, marker = work.path / "models/checkpoints", work.path / "models/train-in-progress.json"
    killed = kill_when(work, [str(VENV_BIN / "dvc"), "repro", "--force", "--single-item", "train"],
                       ckpts / "checkpoint-4" / "trainer_state.json")
    assert killed.returncode == -9, f"train finished before the kill:\n{killed.stdout[-2000:]}"
    out = work.dvc("repro").stdout
    assert "Stage 'train' is cached - skipping run, checking out outputs" in out, out
    assert (ckpts / "checkpoint-4").is_dir() and marker.is_file()  # what the issue saw: the scratch outlives it
    said = work.run(sys.executable, "-m", "lmtune.cli.scratch").stdout
    assert "removed a killed run's scratch" in said, said
    assert not ckpts.exists() and not marker.exists()
    assert "up to date" in work.dvc("status").stdout
    assert work.run(sys.executable, "-m", "lmtune.cli.scratch").stdout == ""  # nothing left: says nothing


# --- The identity by name, and what a discard says -------------------------------------------------------

def test_identity_names_each_input(tmp_path):
    base, chunks = folders(tmp_path)
    p = params(CLASSIFIER)
    ident = checkpoints.identity(p, p.train, 2, base, chunks)
    assert ident == {"train": p.train.model_dump(), "seed": p.seed, "task": "classification",
                     "task_params": {**p.classification, "label_names": ["neg", "pos"]}, "lora": p.lora.model_dump(),
                     "world_size": 2,
                     "accelerate_config": None, "base": checkpoints.folder_fingerprint(base),
                     "chunks": checkpoints.folder_fingerprint(chunks)}
    # The stamp is read back from JSON: its key order must not change the hash.
    assert checkpoints.fingerprint(dict(reversed(list(ident.items())))) == checkpoints.fingerprint(ident)


def test_superseded_leaves_out_what_the_preflight_and_the_launcher_decide(tmp_path):
    base, chunks = folders(tmp_path)
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()

    def stamp(p, planned, world_size):
        (ckpts / checkpoints.FINGERPRINT).write_text(json.dumps(
            {"identity": checkpoints.identity(p, planned, world_size, base, chunks)}))

    auto = params({"train": {"auto_batch_size": True, "batch_size": 4, "gradient_accumulation_steps": 1}})
    stamp(auto, auto.train.model_copy(update={"batch_size": 2, "gradient_accumulation_steps": 2}), 3)
    assert checkpoints.superseded(auto, ckpts, base, chunks)  # the preflight's pick and the world size aside
    fixed = params({"train": {"batch_size": 4, "gradient_accumulation_steps": 1}})
    stamp(fixed, fixed.train.model_copy(update={"batch_size": 2}), 1)
    assert not checkpoints.superseded(fixed, ckpts, base, chunks)  # a configured batch is an input
    stamp(fixed, fixed.train.model_copy(update={"gradient_accumulation_steps": 2}), 1)
    assert not checkpoints.superseded(fixed, ckpts, base, chunks)
    (ckpts / checkpoints.FINGERPRINT).write_text("[1, 2]")  # not a record: as if there were none
    assert checkpoints.superseded(fixed, ckpts, base, chunks) and checkpoints._stamp(ckpts) is None


def test_changed_inputs_by_name(tmp_path):
    (tmp_path / checkpoints.FINGERPRINT).write_text(json.dumps({"identity": {"seed": 1, "task": "a", "old": 1}}))
    assert checkpoints.changed_inputs(tmp_path, {"seed": 2, "task": "a", "new": 0}) == ["new", "old", "seed"]
    assert checkpoints.changed_inputs(tmp_path, {"seed": 1, "task": "a", "old": 1}) == []
    assert checkpoints.changed_inputs(tmp_path, None) == []
    assert checkpoints.changed_inputs(tmp_path / "none", {"seed": 1}) == []
    (tmp_path / checkpoints.FINGERPRINT).write_text(json.dumps({"identity": "not a dict"}))
    assert checkpoints.changed_inputs(tmp_path, {"seed": 1}) == []


def test_resume_and_discard_say_so_at_once(tmp_path, monkeypatch):
    ckpts = tmp_path / "checkpoints"
    (ckpts / "checkpoint-2").mkdir(parents=True)
    (ckpts / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2, "max_steps": 8}))
    (ckpts / checkpoints.FINGERPRINT).write_text(json.dumps({"fingerprint": "f1", "identity": {"seed": 1, "lr": 1}}))
    out = FlushedStdout()
    monkeypatch.setattr(sys, "stdout", out)
    assert checkpoints.resumable_checkpoint(ckpts, "f1") == str(ckpts / "checkpoint-2")
    assert out.flushed == f"resuming from {ckpts / 'checkpoint-2'}\n"
    assert checkpoints.resumable_checkpoint(ckpts, "f2", {"seed": 2, "lr": 3}) is None and not ckpts.exists()
    assert out.flushed == out.buffered and out.buffered.endswith(
        f"discarding checkpoints in {ckpts}: made with different params or data (lr, seed)\n")
    (ckpts / "checkpoint-2").mkdir(parents=True)
    (ckpts / checkpoints.FINGERPRINT).write_text(json.dumps({"fingerprint": "f1", "identity": {"seed": 1}}))
    checkpoints.resumable_checkpoint(ckpts, "f2", {"seed": 1})  # nothing by name differs: no list
    assert out.buffered.endswith(f"discarding checkpoints in {ckpts}: made with different params or data\n")
