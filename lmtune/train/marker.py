"""An unfinished run says so: a marker file beside the outputs while training runs, and the message the next
run prints when a killed one (SIGKILL, e.g. the out-of-memory killer) left it behind."""
import json
import os
import threading
import time
from pathlib import Path

from lmtune.train.limits import MB, peak_rss, rss
from lmtune.train.plan import Plan


def memory_now(device: str = "cpu") -> dict:
    if device == "cuda":
        import torch

        return {"memory_mb": round(torch.cuda.memory_allocated() / MB, 1),
                "peak_memory_mb": round(torch.cuda.max_memory_allocated() / MB, 1)}
    return {"memory_mb": round(rss() / MB, 1), "peak_memory_mb": round(peak_rss() / MB, 1)}


def unfinished_run(marker: Path) -> str | None:
    """The message for a run that left its marker: it was killed without a word (SIGKILL, e.g. the
    kernel's out-of-memory killer; power loss). None when the last run finished or said why it stopped."""
    marker = Path(marker)
    if not marker.is_file():
        return None
    try:
        m = json.loads(marker.read_text())
    except (OSError, ValueError):
        m = {}
    step = m.get("step")
    steps = f"it reached step {step} of {m['max_steps']}" if step is not None and m.get("max_steps") else (
        f"it reached step {step}" if step is not None else "it stopped before its first step")
    memory = ""
    if m.get("memory_mb") is not None:
        memory = (f"; last memory reading {m['memory_mb']:,.0f} MB (peak {m.get('peak_memory_mb', 0):,.0f} MB"
                  + (f", limit {m['memory_limit_mb']:,.0f} MB" if m.get("memory_limit_mb") else "")
                  + (f", estimate {m['memory_estimate_mb']:,.0f} MB" if m.get("memory_estimate_mb") else "")
                  + (f", at {m['updated']}" if m.get("updated") else "") + ")")
    hint = ""
    if m.get("peak_memory_mb") and m.get("memory_limit_mb") and m["peak_memory_mb"] >= 0.9 * m["memory_limit_mb"]:
        hint = ("; that is close to the limit, so the out-of-memory killer is the likely cause: lower train.batch_size "
                "(raising train.gradient_accumulation_steps), chunk.block_size, or set train.gradient_checkpointing: true")
    return (f"train: the previous run (pid {m.get('pid', '?')}, started {m.get('started', '?')}) did not finish and "
            f"printed no error, so it was killed (SIGKILL, e.g. by the kernel's out-of-memory killer) or lost power; "
            f"{steps}{memory}{hint}")


class RunMarker:
    """A small JSON file that exists while training runs, removed when the stage ends (success or error).

    It lives beside the outputs (models/, not models/checkpoints/, which `dvc checkout` must find as it
    left it) and records the step reached (at every step's end) and the process's memory, also sampled
    every `interval` seconds by a daemon thread (a step can take minutes; an out-of-memory kill usually
    comes mid-step), so the next run can say how far the killed one got. Written atomically: a kill
    mid-write leaves the previous reading.
    """

    def __init__(self, path: Path, plan: Plan | None, device: str = "cpu", interval: float = 1.0, enabled: bool = True):
        self.path, self.device, self.interval, self.enabled = Path(path), device, interval, enabled
        self.state = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "step": None, "max_steps": None,
                      **({"memory_estimate_mb": plan.estimate_mb, "memory_limit_mb": plan.limit_mb,
                          "micro_batch_size": plan.batch_size, "gradient_accumulation_steps": plan.gradient_accumulation_steps}
                         if plan else {})}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def write(self) -> None:
        from lmtune.io import atomic_write_json

        if not self.enabled:  # the other processes under `accelerate launch`: the callback runs in every one
            return
        with self._lock:
            self.state.update(memory_now(self.device), updated=time.strftime("%Y-%m-%d %H:%M:%S"))
            atomic_write_json(self.path, self.state)

    def step(self, step: int, max_steps: int) -> None:
        """At every step's end: the file says how far training got even if the kill comes a moment later
        (a small atomic write, ~0.1 ms, against steps of 0.1 s and more)."""
        self.state.update(step=step, max_steps=max_steps)
        self.write()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def __enter__(self):
        if self.enabled:
            self.write()
            self._thread = threading.Thread(target=self._sample, name="lmtune-memory-marker", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self.path.unlink(missing_ok=True)
        return False

    def callback(self):
        """A TrainerCallback that keeps the step reached up to date."""
        import transformers

        marker = self

        class _Progress(transformers.TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                marker.step(state.global_step, state.max_steps)

            def on_step_end(self, args, state, control, **kw):
                marker.step(state.global_step, state.max_steps)

        return _Progress()
