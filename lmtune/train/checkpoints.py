"""Training checkpoints: what they were made from (their identity), and whether a run may resume from them.

models/checkpoints/ is the train stage's crash-resume scratch. A run resumes from it only when everything the
checkpoint's state depends on is the same: `identity` lists all of it, in one place, and its hash is stamped
beside the checkpoints (fingerprint.json) before the first one is complete.
"""
import hashlib
import json
import shutil
from pathlib import Path

import transformers
from transformers.trainer_utils import get_last_checkpoint

from lmtune import paths
from lmtune.io import atomic_write_json, folder_fingerprint

FINGERPRINT = "fingerprint.json"


def identity(p, planned, world_size: int, base: Path = paths.BASE, chunks: Path = paths.CHUNKS,
             root: Path = paths.ROOT) -> dict:
    """Everything a checkpoint's weights and optimizer state depend on, by name (JSON values).

    p: the validated params; planned: p.train with the micro-batch and accumulation the memory preflight
    chose (lmtune.train.plan); world_size: the processes training together (the global batch, and how the
    state is split); base, chunks: the folders it trains from. A change to any of these makes a checkpoint
    unusable; anything else (evaluation, generation, the card's fields) may change and the run resumes.
    """
    config = p.train.accelerate_config
    return {
        "train": planned.model_dump(),
        "seed": p.seed,
        "task": p.task,                      # the model class, the loss, how examples are collated
        # The task's own params section: a classifier's label names size its head and order its rows (the rest
        # shape the data, which `chunks` covers too).
        "task_params": getattr(p, p.task),
        "lora": p.lora.model_dump(),         # which weights train and how the adapters are shaped
        "world_size": world_size,
        # The launcher's file: its distributed type (DDP, FSDP, DeepSpeed) decides how the state is sharded.
        "accelerate_config": folder_fingerprint(root / config) if config else None,
        "base": folder_fingerprint(base),      # the bytes of the weights training starts from
        "chunks": folder_fingerprint(chunks),  # the bytes of the training and validation blocks
    }


def fingerprint(ident: dict) -> str:
    """The identity's hash, as stamped beside the checkpoints."""
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def superseded(p, ckpt_dir: Path = paths.CHECKPOINTS, base: Path = paths.BASE, chunks: Path = paths.CHUNKS) -> bool:
    """Whether the checkpoints in `ckpt_dir` were made from the inputs `p` and the data on disk name now (or
    carry no identity: killed before their first save). Once train's outputs for those inputs are in place,
    nothing resumes them. The preflight's micro-batch is not known without the model (with auto_batch_size
    it is left out) and the world size is train.num_processes (a train param)."""
    then = _stamp_record(ckpt_dir).get("identity")
    if not isinstance(then, dict):
        return True
    planned = ("batch_size", "gradient_accumulation_steps") if p.train.auto_batch_size else ()

    def comparable(ident: dict) -> dict:
        train = {k: v for k, v in (ident.get("train") or {}).items() if k not in planned}
        return {**ident, "train": train, "world_size": None}

    return comparable(then) == comparable(identity(p, p.train, p.train.num_processes, base, chunks))


def complete_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest checkpoint that was fully written; partial ones (a kill mid-save) are removed.

    The Trainer writes trainer_state.json last, and deletes older checkpoints only after it, so a
    checkpoint without it was interrupted and the previous one is still there.
    """
    while (last := get_last_checkpoint(str(ckpt_dir))) is not None:
        if (Path(last) / "trainer_state.json").is_file():
            return last
        print(f"discarding incomplete checkpoint {last}")
        shutil.rmtree(last)
    return None


def _stamp_record(ckpt_dir: Path) -> dict:
    try:
        record = json.loads((Path(ckpt_dir) / FINGERPRINT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _stamp(ckpt_dir: Path) -> str | None:
    return _stamp_record(ckpt_dir).get("fingerprint")


def changed_inputs(ckpt_dir: Path, now: dict | None) -> list[str]:
    """The identity's inputs whose value differs from the one the checkpoints were made with (by name)."""
    then = _stamp_record(ckpt_dir).get("identity")
    if not isinstance(then, dict) or now is None:
        return []
    return sorted(k for k in then.keys() | now.keys() if then.get(k) != now.get(k))


def resumable_checkpoint(ckpt_dir: Path, fp: str, now: dict | None = None) -> str | None:
    """The last checkpoint if it was made with the same params and data; otherwise discard the folder.

    `now`: the identity `fp` was made from, so that a discard names the inputs that changed.
    """
    if not ckpt_dir.is_dir():
        return None
    if _stamp(ckpt_dir) == fp:
        last = complete_checkpoint(ckpt_dir)
        if last is None:
            return None
        state = json.loads((Path(last) / "trainer_state.json").read_text(encoding="utf-8"))
        if state.get("global_step", 0) < state.get("max_steps", 0):
            print(f"resuming from {last}", flush=True)
            return last
        # The Trainer would run one step past the end from a finished checkpoint; the same params and
        # data give the same model, so train again from step 0.
        print(f"discarding checkpoints in {ckpt_dir}: {Path(last).name} already finished training")
        shutil.rmtree(ckpt_dir)
        return None
    if any(ckpt_dir.iterdir()):
        changed = changed_inputs(ckpt_dir, now)
        print(f"discarding checkpoints in {ckpt_dir}: made with different params or data"
              + (f" ({', '.join(changed)})" if changed else ""), flush=True)
    shutil.rmtree(ckpt_dir)
    return None


class StampOnSave(transformers.TrainerCallback):
    """Writes the checkpoint folder's fingerprint.json with the first checkpoint, not before.

    At the end of the step whose checkpoint the Trainer is about to save (the Trainer's own flow callback,
    which runs first, has just set `should_save`), so the stamp is on disk before the checkpoint is: a
    kill right after the checkpoint is complete still finds it resumable. Before that step the folder is
    left as it was, so a run killed in its first steps writes nothing there. on_save repeats it for a
    save that something else asked for.
    """

    def __init__(self, ckpt_dir: Path, record: dict):
        self.path, self.record = Path(ckpt_dir) / FINGERPRINT, record

    def _write(self, state):
        if state.is_world_process_zero and _stamp(self.path.parent) != self.record["fingerprint"]:
            atomic_write_json(self.path, self.record)

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:
            self._write(state)

    def on_save(self, args, state, control, **kwargs):
        self._write(state)
