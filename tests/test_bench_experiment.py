"""bench/experiment.py: the per-stage split of a `dvc exp run`'s wall time and the disk count."""
import os

from bench.experiment import disk_bytes, split_stages


def test_split_stages_charges_hashing_and_lock_updates_to_dvc():
    lines = [(0.5, "Reproducing experiment 'x'"), (1.0, "Running stage 'train':"), (1.1, "> python -m stages.train"),
             (5.0, "train: 8 steps"), (6.0, "Updating lock file 'dvc.lock'"),
             (6.5, "Stage 'evaluate_base' didn't change, skipping"), (7.0, "Running stage 'evaluate':"),
             (9.0, "evaluate: tuned"), (9.5, "Updating lock file 'dvc.lock'")]
    out = split_stages(lines, 10.0)
    assert out == {"train": 4.0, "evaluate": 2.0, "dvc_overhead": 4.0}
    assert sum(out.values()) == 10.0


def test_disk_bytes_counts_a_hardlinked_file_once(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 100_000)
    one = disk_bytes(tmp_path)
    os.link(tmp_path / "a", tmp_path / "b")
    assert disk_bytes(tmp_path) == one
    (tmp_path / "c").write_bytes(b"x" * 100_000)
    assert disk_bytes(tmp_path) > one
