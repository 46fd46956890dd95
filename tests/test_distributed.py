"""The train stage under `accelerate launch` with 2 CPU processes (gloo), unchanged.

On a machine without GPUs the launcher's `--multi_gpu` mode starts torchrun-style processes; the
Trainer is told `use_cpu` (lmtune.training) so they join one gloo process group. The model is the
tiny 2-layer GPT-2, so this fits a 2-core box.
"""
import json

import pytest

from conftest import VENV_BIN
from repo_tools import copy_repo, leftovers

pytestmark = pytest.mark.slow

LAUNCH = [
    "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
    "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1", "--main_process_port", "0",
    "-m", "stages.train",
]


def test_train_stage_under_accelerate_launch_two_cpu_processes(tiny_repro, tmp_path):
    repo = copy_repo(tiny_repro, tmp_path / "repo")
    single = json.loads((repo.path / "metrics/train.json").read_text())  # 1 process x batch 4
    assert single["global_batch_size"] == 4
    assert not (repo.path / "models/checkpoints").exists()  # removed after the single run: no resuming
    # train.batch_size is per process: 2 processes x 2 = the single run's global batch of 4.
    repo.set_params({"train": {"batch_size": 2}})
    proc = repo.run(str(VENV_BIN / "accelerate"), *LAUNCH)
    out = proc.stdout + proc.stderr

    timing = json.loads((repo.path / "metrics/train_timing.json").read_text())
    assert timing["world_size"] == 2
    metrics = json.loads((repo.path / "metrics/train.json").read_text())
    assert metrics["steps"] == 8
    assert metrics["global_batch_size"] == 2 * 2 * 1  # batch_size x processes x accumulation
    assert metrics["train_tokens"] == 8 * 4 * 64
    # The data really is split between the processes: 8 steps of the global batch 4 cover the same
    # fraction of an epoch as the single run (each process alone would need twice as many steps).
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
