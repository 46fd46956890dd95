"""One GPU per experiment: on a machine with several GPUs, a one-process train stage locks one GPU and sees only it.

`make sweep JOBS=N` runs N queued experiments at once; without this every one of them would train on GPU 0.
Each GPU has a lock file in a folder shared by every run on the machine (LMTUNE_GPU_LOCK_DIR, default
<tmp>/lmtune-gpus: DVC's queue runs each experiment in its own copy of the repo, so the folder cannot live in
it). The stage takes the first free lock with flock, writes its pid into the file, and sets
CUDA_VISIBLE_DEVICES to that GPU before CUDA starts. The kernel drops an flock when its process ends, however
it ends (exit, exception, SIGKILL), so a killed run never blocks a GPU; a normal exit also empties the file,
so the next run that finds a pid in a free lock knows that run was killed, and says so. When every GPU is
taken the stage waits for one.

Nothing changes on a machine without NVIDIA GPUs, for multi-process runs (accelerate spreads their processes
over the GPUs), with LMTUNE_GPU_LOCK=0, or when CUDA_VISIBLE_DEVICES is set to one device. A
CUDA_VISIBLE_DEVICES list narrows the GPUs the stage chooses from.
"""
import atexit
import fcntl
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_DIR_ENV = "LMTUNE_GPU_LOCK_DIR"
SWITCH_ENV = "LMTUNE_GPU_LOCK"
VISIBLE = "CUDA_VISIBLE_DEVICES"
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one entry per GPU the driver sees; reading it starts no CUDA context

_held: list = []  # the open lock files of this process: closing one would release its GPU


@dataclass(frozen=True)
class Claim:
    gpu: str            # the device id (or UUID) now in CUDA_VISIBLE_DEVICES
    lock: Path
    stale_pid: int | None  # the pid a killed run left in the lock file, if any


def gpu_count(gpus_dir: Path = NVIDIA_GPUS) -> int:
    try:
        return sum(1 for _ in gpus_dir.iterdir())
    except OSError:
        return 0


def candidates(environ, count: int) -> list[str]:
    """The GPUs this run may take: CUDA_VISIBLE_DEVICES' list when set, else every GPU on the machine."""
    visible = environ.get(VISIBLE)
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(count)]


def lock_dir(environ) -> Path:
    return Path(environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "lmtune-gpus")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _recorded_pid(fh) -> int | None:
    fh.seek(0)
    text = fh.read().strip()
    return int(text) if text.isdigit() else None


def try_lock(path: Path):
    """(open file holding the lock, pid of a dead previous holder or None), or None when a live process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    previous = _recorded_pid(fh)
    stale = previous if previous is not None and previous != os.getpid() and not alive(previous) else None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh, stale


def claim(environ=os.environ, count: int | None = None, wait: bool = True, poll: float = 2.0,
          log=print) -> Claim | None:
    """Lock a free GPU and make it the only one this process sees (sets CUDA_VISIBLE_DEVICES in `environ`).
    None where there is nothing to choose (see the module docstring); waits while every GPU is taken."""
    if environ.get(SWITCH_ENV, "1") == "0":
        return None
    gpus = candidates(environ, gpu_count() if count is None else count)
    if not gpus or (environ.get(VISIBLE) is not None and len(gpus) == 1):
        return None
    folder = lock_dir(environ)
    waited = False
    while True:
        for gpu in gpus:
            path = folder / f"gpu-{gpu}.lock"
            got = try_lock(path)
            if got is None:
                continue
            fh, stale = got
            _held.append(fh)
            environ[VISIBLE] = gpu
            note = f"; its previous holder, pid {stale}, was killed" if stale else ""
            log(f"train: GPU {gpu} (lock {path}{note})", flush=True)
            return Claim(gpu, path, stale)
        if not wait:
            return None
        if not waited:
            log(f"train: all {len(gpus)} GPUs are taken by other runs ({folder}); waiting for one", flush=True)
            waited = True
        time.sleep(poll)


@atexit.register
def release_all() -> None:
    """Give back this process's GPUs now, emptying their lock files: a file that still names a pid after its
    lock is free was left by a process that never reached exit (killed, or crashed hard)."""
    while _held:
        fh = _held.pop()
        fh.seek(0)
        fh.truncate()
        fh.close()
