"""lmtune/gpus.py: one GPU per queued experiment (free, busy, released on exit, stale after a kill, CPU unchanged).

Other runs are real processes holding the lock files (flock is per open file, so a second process is the honest
way to be "another run"); no GPU is needed: the GPU count is a parameter.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from lmtune import gpus

HOLD = """
import sys, time
from lmtune import gpus
env = {"LMTUNE_GPU_LOCK_DIR": sys.argv[1]}
c = gpus.claim(env, count=int(sys.argv[2]), wait=False, log=lambda *a, **k: None)
print(c.gpu if c else "none", flush=True)
time.sleep(float(sys.argv[3]))
"""


def hold(tmp_path, count: int, seconds: float = 60) -> tuple[subprocess.Popen, str]:
    """Another run: a process that claims a GPU and keeps it for `seconds`. Returns it and the GPU it took."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), str(count), str(seconds)],
                            stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    return proc, proc.stdout.readline().strip()


def claim(tmp_path, count, **kw):
    env = {"LMTUNE_GPU_LOCK_DIR": str(tmp_path), **kw.pop("env", {})}
    lines = []
    c = gpus.claim(env, count=count, wait=kw.pop("wait", False), log=lambda m, **k: lines.append(m), **kw)
    return c, env, lines


@pytest.fixture(autouse=True)
def _release():
    yield
    gpus.release_all()


def test_a_free_gpu_is_taken_and_made_the_only_visible_one(tmp_path):
    c, env, lines = claim(tmp_path, 4)
    assert c.gpu == "0" and env["CUDA_VISIBLE_DEVICES"] == "0" and c.stale_pid is None
    assert (tmp_path / "gpu-0.lock").read_text().strip() == str(os.getpid())
    assert lines == [f"train: GPU 0 (lock {tmp_path / 'gpu-0.lock'})"]


def test_busy_gpus_are_skipped_and_each_run_gets_its_own(tmp_path):
    others = [hold(tmp_path, 3) for _ in range(2)]
    try:
        assert sorted(g for _, g in others) == ["0", "1"]  # two runs, two GPUs
        c, env, _ = claim(tmp_path, 3)
        assert c.gpu == "2" and env["CUDA_VISIBLE_DEVICES"] == "2"
        gpus.release_all()
        # All three taken (the two others and a third run): a fourth finds none free.
        third, got = hold(tmp_path, 3)
        try:
            assert got == "2"
            assert claim(tmp_path, 3)[0] is None
        finally:
            third.kill(), third.wait()
    finally:
        for p, _ in others:
            p.kill(), p.wait()


def test_a_waiting_run_takes_the_gpu_when_its_holder_exits(tmp_path):
    other, got = hold(tmp_path, 1, seconds=1.0)
    assert got == "0"
    start = time.monotonic()
    c, _, lines = claim(tmp_path, 1, wait=True, poll=0.1)
    other.wait()
    assert c.gpu == "0" and time.monotonic() - start > 0.3
    assert lines[0].startswith("train: all 1 GPUs are taken by other runs") and lines[1].startswith("train: GPU 0")
    assert c.stale_pid is None  # its holder exited normally and emptied the file: nothing stale to report


def test_a_killed_holder_leaves_a_stale_lock_that_the_next_run_takes_and_reports(tmp_path):
    other, got = hold(tmp_path, 2)
    assert got == "0"
    assert claim(tmp_path, 2)[0].gpu == "1"  # busy while it lives
    gpus.release_all()
    os.kill(other.pid, signal.SIGKILL)
    other.wait()
    assert (tmp_path / "gpu-0.lock").read_text().strip() == str(other.pid)  # the file outlives the kill
    c, _, lines = claim(tmp_path, 2)
    assert c.gpu == "0" and c.stale_pid == other.pid
    assert lines == [f"train: GPU 0 (lock {tmp_path / 'gpu-0.lock'}; its previous holder, pid {other.pid}, was killed)"]


def test_cpu_machines_and_explicit_choices_are_unchanged(tmp_path):
    for count, env in [(0, {}), (4, {"LMTUNE_GPU_LOCK": "0"}), (4, {"CUDA_VISIBLE_DEVICES": "3"})]:
        c, seen, lines = claim(tmp_path, count, env=env)
        assert c is None and seen.get("CUDA_VISIBLE_DEVICES") == env.get("CUDA_VISIBLE_DEVICES") and lines == []
    assert not list(tmp_path.iterdir())  # no lock file was made


def test_a_visible_devices_list_narrows_the_choice(tmp_path):
    c, env, _ = claim(tmp_path, 8, env={"CUDA_VISIBLE_DEVICES": "5,7"})
    assert c.gpu == "5" and env["CUDA_VISIBLE_DEVICES"] == "5"
    assert gpus.candidates({"CUDA_VISIBLE_DEVICES": "GPU-aa, GPU-bb"}, 8) == ["GPU-aa", "GPU-bb"]
    assert gpus.candidates({}, 2) == ["0", "1"] and gpus.candidates({"CUDA_VISIBLE_DEVICES": ""}, 2) == []


def test_gpu_count_reads_the_driver_folder(tmp_path):
    assert gpus.gpu_count(tmp_path / "missing") == 0
    for bus in ("0000:01:00.0", "0000:02:00.0"):
        (tmp_path / bus).mkdir()
    assert gpus.gpu_count(tmp_path) == 2
