"""Multi-process training inside the pipeline: `train.num_processes: 2` through DVC, 2 CPU processes (gloo).

The train stage re-starts itself under `accelerate launch` (lmtune/train/launch.py); on a machine without GPUs
the Trainer is told `use_cpu` (lmtune.train.trainer), so the processes join one gloo process group. The model
is the tiny 2-layer GPT-2, so this fits a 2-core box.
"""
import json
import re
import shutil

import pytest

from repo_tools import copy_repo, kill_when, leftovers, python_stage

pytestmark = pytest.mark.slow


def test_exp_run_trains_with_two_cpu_processes_and_does_not_resume_a_one_process_checkpoint(tiny_repro, tmp_path):
    repo = copy_repo(tiny_repro, tmp_path / "repo")
    single = json.loads((repo.path / "metrics/train.json").read_text())  # 1 process x batch 4
    assert single["global_batch_size"] == 4
    # A one-process run killed right after checkpoint-4 (of 8 steps): a checkpoint the 2-process run
    # would resume if the process count were not part of the fingerprint.
    ckpts = repo.path / "models/checkpoints"
    shutil.rmtree(ckpts, ignore_errors=True)
    killed = kill_when(repo, python_stage("train"), ckpts / "checkpoint-4" / "trainer_state.json")
    assert killed.returncode == -9, f"train finished before the kill:\n{killed.stdout[-2000:]}"

    # train.batch_size is per process: 2 processes x 2 = the single run's global batch of 4.
    proc = repo.dvc("exp", "run", "train", "-S", "train.num_processes=2", "-S", "train.batch_size=2")
    out = proc.stdout + proc.stderr
    assert "Running stage 'train'" in out, out[-3000:]
    assert "train: accelerate launch --num_processes 2 " in out, out[-3000:]
    assert "discarding checkpoints in" in out and "different params or data" in out, out[-3000:]
    # The identity (lmtune.train.checkpoints) names what changed: the process count among it.
    assert re.search(r"made with different params or data \([^)]*\bworld_size\b", out), out[-3000:]
    assert "resuming from" not in out

    timing = json.loads((repo.path / "metrics/train_timing.json").read_text())
    assert timing["world_size"] == 2 and timing["resumed_from_step"] == 0
    metrics = json.loads((repo.path / "metrics/train.json").read_text())
    assert metrics["steps"] == 8
    assert metrics["global_batch_size"] == 2 * 1 * 2  # batch_size x gradient_accumulation_steps x processes
    assert metrics["train_tokens"] == 8 * 4 * 64  # steps x global batch x block_size
    # The data really is split between the processes: 8 steps of the global batch 4 cover the same
    # fraction of an epoch as the single run (a process training alone would cover half as much).
    assert metrics["epochs"] == single["epochs"]
    # Close, not equal: each process draws its own shard order and dropout stream.
    assert abs(metrics["train_loss"] - single["train_loss"]) < 0.05, (metrics, single)
    assert abs(metrics["final_logged_loss"] - single["final_logged_loss"]) < 0.1, (metrics, single)

    # Exactly one process wrote the outputs: one summary line, one set of curves, no stray temp dirs.
    assert out.count("train: 8 steps") == 1, out[-3000:]
    rows = (repo.path / "metrics/train/plots/metrics/loss.tsv").read_text().strip().splitlines()
    assert len(rows) == 1 + 8, rows  # header + one row per logged step (logging_steps 1)
    assert (repo.path / "models/final/model.safetensors").is_file()
    assert leftovers(repo.path) == []
    assert not (repo.path / "models/train-in-progress.json").exists()  # the run marker: rank 0's, removed at the end
    # DVC recorded the run: the params it ran with are in dvc.lock, and train is up to date.
    status = repo.dvc("status", "train", "--json").stdout.strip()
    assert status in ("{}", ""), status
    assert "num_processes: 2" in (repo.path / "dvc.lock").read_text()
