"""Training memory: what one step will need, what this process may use, and a word when the OS kills it.

Why an estimate from shapes, not a measured probe step: a probe step at the configured shape is the very
thing that gets killed (SmolLM2 at 4 x 4,096 tokens needs more than this 23.5 GB machine has), a probe
at a small shape extrapolates badly (attention can grow with the square of the block), and glibc keeps
freed memory, so a probe would raise the process's own peak. Instead the model's forward pass runs once
on *fake tensors* (torch's FakeTensorMode: shapes, dtypes and devices, no data, no memory, ~1 s for
SmolLM2) and every tensor autograd saves for the backward pass is counted. That is exact for the
model as it is (architecture, attention implementation (SDPA saves O(T) on CPU without dropout, O(T^2)
with it), LoRA's frozen weights, dropout masks, autocast copies on CUDA) with no per-architecture table.
The rest is arithmetic on what the run holds anyway, measured where it can be:

    peak = base        the process now (CPU: its resident memory: Python, libraries, the loaded
                       weights; CUDA: the weights it will move to the GPU)
         + gradients   one per trainable parameter (its dtype)
         + optimizer   AdamW's two moments per trainable parameter
         + activations what autograd saves in the forward pass (fake-tensor count); with gradient
                       checkpointing: each checkpointed layer's input, plus one layer recomputed
         + logits      LOGITS_BUFFERS x batch x block x vocab x 4 bytes: at the start of the backward
                       pass the fp32 gradients of the loss's log-softmax and of its input exist
                       together, beside the saved log-softmax itself (counted in activations): 2.
                       On CPU with lmtune.allocator's glibc tuning, HEAP_SLACK_LOGITS more: see below.

Heap slack (CPU, tuned allocator): torch asks glibc for 64-byte-aligned memory, so glibc carves each
block from a slightly larger free chunk, and a freed logits-sized hole is a few bytes too small for the
next step's identical request unless a neighbour is free too. With the 1 GiB mmap threshold of
lmtune.allocator those blocks stay in the heap, so its high-water mark holds some of the step's four
logits-sized buffers (logits, log-softmax, two gradients) twice. Measured (bench/memory.py, fresh
processes, tiny GPT-2 whose logits are ~40% of its peak): 0.5 to 4 logits-sized blocks above the live
tensors, the same run to run only in distribution: the heap grows by one block at a random step (after
step 2, or 9, or 51 of 60) depending on which small allocations take the holes' edges. SmolLM2 at
4 x 256: 4.79 GB tuned against 4.42 untuned over the default's 24 steps, 1.8 blocks (bench/RESULTS.md).
The estimate adds 3 blocks. It adds none for logits of lmtune.allocator.MMAP_THRESHOLD (1 GiB) or more
(glibc maps those afresh and unmaps them on free), nor without the tuning, nor on CUDA (its caching
allocator is measured by its live tensors).

`bench/memory.py` (`make bench`) compares the estimate with the median measured peak of fresh runs
(targets: within +-25%, never more than 10% below). tests/test_memory.py checks the same bounds with
glibc's own allocator settings (LMTUNE_MALLOC_TUNING=0), where one run's peak is the live tensors'
and repeats to ~1%; with the tuning a single run of the tiny model can land anywhere in the range above.

What the process may use: on CPU the smaller of the RAM the kernel reports available (MemAvailable) and
the room left under every memory cgroup limit above this process (v2 `memory.max`, v1
`memory.limit_in_bytes`; containers report the host's RAM through the usual APIs), each plus what the
process already holds; shared between the processes `accelerate launch` starts on one machine. On CUDA
the free device memory. `LMTUNE_MEMORY_LIMIT_MB` replaces the measured figure for each training process
(constrained environments the detection misses, tests; a huge value turns the check off).
"""
import contextlib
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lmtune.errors import UserError

MB = 2**20
GB = 2**30
LIMIT_ENV = "LMTUNE_MEMORY_LIMIT_MB"
UNLIMITED = 2**60  # cgroup v1 reports "no limit" as a huge number (2^63 rounded down to a page)
ADAMW_STATES = 2           # exp_avg and exp_avg_sq per trainable parameter, each of its dtype
LOGITS_BUFFERS = 2         # fp32 gradients of the log-softmax and of the logits, live together
HEAP_SLACK_LOGITS = 3      # logits-sized blocks the tuned glibc heap holds beyond them (module docstring)


# ---- What one step needs -------------------------------------------------------------------------

@dataclass(frozen=True)
class Profile:
    """Bytes autograd saves in one forward pass, as a line in the micro-batch: fixed + per_sample x batch.

    Every saved activation carries the batch dimension, so two fake passes (batch 1 and 2) give the
    line exactly; `checkpointed` is the same with gradient checkpointing on.
    """
    block: int
    fixed: int
    per_sample: int
    fixed_checkpointed: int
    per_sample_checkpointed: int
    logits_per_sample: int  # one example's logits in fp32 (the loss upcasts them)

    def activations(self, batch: int, checkpointing: bool) -> int:
        if checkpointing:
            return max(0, self.fixed_checkpointed + self.per_sample_checkpointed * batch)
        return max(0, self.fixed + self.per_sample * batch)


@dataclass(frozen=True)
class Estimate:
    batch: int
    block: int
    base: int
    gradients: int
    optimizer: int
    activations: int
    logits: int

    @property
    def total(self) -> int:
        return self.base + self.gradients + self.optimizer + self.activations + self.logits

    def parts(self) -> str:
        return (f"{gb(self.base)} process + {gb(self.gradients)} gradients + {gb(self.optimizer)} AdamW + "
                f"{gb(self.activations)} activations + {gb(self.logits)} logits")


def estimate(profile: Profile, batch: int, base: int, trainable_bytes: int, checkpointing: bool,
             heap_slack: bool = False) -> Estimate:
    """Peak bytes of a training step at micro-batch `batch` (see the module docstring for each term).
    heap_slack: the process runs with lmtune.allocator's glibc tuning (CPU)."""
    from lmtune.allocator import MMAP_THRESHOLD

    in_heap = heap_slack and profile.logits_per_sample * batch < MMAP_THRESHOLD
    buffers = LOGITS_BUFFERS + (HEAP_SLACK_LOGITS if in_heap else 0)
    return Estimate(
        batch=batch, block=profile.block, base=base,
        gradients=trainable_bytes,
        optimizer=ADAMW_STATES * trainable_bytes,
        activations=profile.activations(batch, checkpointing),
        logits=int(buffers * profile.logits_per_sample * batch),
    )


def largest_fitting_divisor(global_batch: int, fits: Callable[[int], bool]) -> int | None:
    """The largest micro-batch that divides `global_batch` (so accumulation keeps it exact) and fits."""
    for m in sorted((d for d in range(1, global_batch + 1) if global_batch % d == 0), reverse=True):
        if fits(m):
            return m
    return None


def gb(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n / MB:.0f} MB"


# ---- Fake-tensor profile of the model ------------------------------------------------------------

def _checkpointable_layers(model) -> list:
    """The layers gradient checkpointing wraps (transformers' GradientCheckpointingLayer)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


def saved_bytes(model, inputs: dict, device: str = "cpu", autocast_dtype=None) -> tuple[int, int, int]:
    """(saved bytes, saved bytes with gradient checkpointing, logits elements) of one training forward
    pass of `model` on `inputs` (real tensors: only their shapes and dtypes are used), on fake tensors.

    Each saved storage counts once (q, k and v save the same normed input); the parameters and
    buffers the model already holds do not count.
    """
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.func import functional_call

    layers = _checkpointable_layers(model)
    mode = FakeTensorMode()
    with mode:
        state = {n: torch.empty(t.shape, dtype=t.dtype, device=device).requires_grad_(t.requires_grad)
                 for n, t in [*model.named_parameters(), *model.named_buffers()]}
        fake_inputs = {k: torch.empty(v.shape, dtype=v.dtype, device=device) for k, v in inputs.items()}
    held = {t.untyped_storage()._cdata for t in state.values()}
    seen: dict[int, int] = {}
    in_layer: dict[int, int] = {}   # storage -> index of the layer whose forward saved it
    inputs_bytes = [0] * len(layers)
    current = [None]

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in held and key not in seen:
            seen[key] = t.untyped_storage().nbytes()
            if current[0] is not None:
                in_layer[key] = current[0]
        return t

    def enter(i):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs.get("hidden_states")
            if isinstance(x, torch.Tensor):
                inputs_bytes[i] = x.numel() * x.element_size()
            current[0] = i
        return hook

    def leave(module, args, output):
        current[0] = None

    handles = [h for i, layer in enumerate(layers) for h in (
        layer.register_forward_pre_hook(enter(i), with_kwargs=True), layer.register_forward_hook(leave))]
    was_training = model.training
    model.train()  # dropout masks are saved only in training mode
    autocast = torch.autocast(device, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    try:
        with mode, autocast, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = functional_call(model, state, (), fake_inputs, strict=False)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    total = sum(seen.values())
    per_layer = [0] * len(layers)
    for key, i in in_layer.items():
        per_layer[i] += seen[key]
    # Checkpointed: a layer keeps only its input; in the backward pass one layer at a time is recomputed.
    checkpointed = total - sum(per_layer) + sum(inputs_bytes) + max(per_layer, default=0)
    return total, checkpointed, out.logits.numel()


def profile(model, example: dict, collate, device: str = "cpu", autocast_dtype=None) -> Profile:
    """The model's activation line, from fake passes at micro-batch 1 and 2 of `example` (one dataset row)."""
    one = collate([example])
    block = int(one["input_ids"].shape[-1])
    s1, c1, logits = saved_bytes(model, one, device, autocast_dtype)
    s2, c2, _ = saved_bytes(model, collate([example, example]), device, autocast_dtype)
    # The loss works on fp32 logits whatever the model's dtype: 4 bytes each.
    return Profile(block=block, fixed=2 * s1 - s2, per_sample=s2 - s1, fixed_checkpointed=2 * c1 - c2,
                   per_sample_checkpointed=c2 - c1, logits_per_sample=4 * logits)


def trainable_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


# ---- What the process may use --------------------------------------------------------------------

def _proc_status_kb(field: str, status: Path = Path("/proc/self/status")) -> int | None:
    try:
        for line in status.read_text(encoding="utf-8").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    return _proc_status_kb("VmRSS") or 0


def peak_rss() -> int:
    """This process's peak resident memory. VmHWM starts afresh at exec; ru_maxrss is carried over from
    the forking parent on Linux (a dvc process that forked us would report its own peak)."""
    value = _proc_status_kb("VmHWM")
    if value is None:
        import resource

        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return value


def mem_available(meminfo: str) -> int | None:
    """MemAvailable (the kernel's estimate of what can be allocated without swapping) from /proc/meminfo."""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


def _stat(path: Path, key: str) -> int:
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_rooms(proc_cgroup: str, root: Path = Path("/sys/fs/cgroup")) -> list[int]:
    """Bytes left under each memory limit that applies to this process: the limit minus what its group
    already holds (usage minus reclaimable inactive page cache, as container runtimes count it).

    proc_cgroup is /proc/self/cgroup's text; each limited cgroup from the process's own up to the root
    counts (a parent's limit applies to its children too). v2: memory.max / memory.current; v1:
    memory.limit_in_bytes / memory.usage_in_bytes. In a container with its own cgroup namespace the
    process's group is the mount's root.
    """
    rooms = []
    for line in proc_cgroup.splitlines():
        _, controllers, rel = line.split(":", 2)
        if controllers == "":
            mount = root if (root / "cgroup.controllers").exists() else root / "unified"
            names = ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            mount = root / "memory"
            names = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        group = mount / rel.strip("/")
        if not group.is_dir():
            group = mount
        while True:
            limit = _read_int(group / names[0])
            if limit is not None and limit < UNLIMITED:
                usage = _read_int(group / names[1]) or 0
                rooms.append(max(0, limit - max(0, usage - _stat(group / "memory.stat", names[2]))))
            if group == mount or mount not in group.parents:
                break
            group = group.parent
    return rooms


def cpu_limit(own_rss: int, available: int | None, rooms: list[int], local_processes: int = 1) -> int | None:
    """The peak this process may reach: what it holds now plus its share of the smaller of the free RAM
    and every cgroup's room (processes on one machine share them)."""
    candidates = [x for x in [available, *rooms] if x is not None]
    if not candidates:
        return None
    return own_rss + min(candidates) // max(1, local_processes)


@dataclass(frozen=True)
class Limit:
    bytes: int | None
    source: str  # how it was found, for the message


def limit_override(environ=os.environ) -> int | None:
    value = environ.get(LIMIT_ENV)
    if value is None or value.strip() == "":
        return None
    try:
        mb = float(value)
    except ValueError:
        raise UserError(f"{LIMIT_ENV}: expected a number of MB, got {value!r}") from None
    if mb <= 0:
        raise UserError(f"{LIMIT_ENV}: must be > 0 MB, got {value!r}")
    return int(mb * MB)


def process_limit(device: str, environ=os.environ) -> Limit:
    """What this process may use at its peak: LMTUNE_MEMORY_LIMIT_MB, else measured (see the module doc)."""
    override = limit_override(environ)
    if override is not None:
        return Limit(override, f"set by {LIMIT_ENV}")
    if device == "cuda":
        import torch

        gpu = int(environ.get("LOCAL_RANK", "0") or 0)  # accelerate selects this process's GPU only later
        free, _ = torch.cuda.mem_get_info(gpu)
        return Limit(free + torch.cuda.memory_reserved(gpu), "free GPU memory")
    try:
        available = mem_available(Path("/proc/meminfo").read_text(encoding="utf-8"))
        proc_cgroup = Path("/proc/self/cgroup").read_text(encoding="utf-8")
    except OSError:
        available, proc_cgroup = None, ""
    if available is None:
        try:
            import psutil

            available = psutil.virtual_memory().available
        except ImportError:
            pass
    rooms = cgroup_rooms(proc_cgroup)
    local = int(environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    source = ("the smaller of available RAM and the cgroup limit" if rooms else "available RAM") + (
        f", shared by {local} processes" if local > 1 else "")
    return Limit(cpu_limit(rss(), available, rooms, local), source)


# ---- The preflight -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """The micro-batch a run trains with, and the memory figures behind the choice."""
    batch_size: int
    gradient_accumulation_steps: int
    auto: bool
    estimate_mb: float | None
    limit_mb: float | None

    def choice(self) -> dict:
        """The chosen micro-batch: recorded beside the checkpoint fingerprint (which hashes it too)."""
        return {"micro_batch_size": self.batch_size, "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "auto_batch_size": self.auto}

    def record(self) -> dict:
        """What metrics/train_timing.json records: the choice and the memory figures behind it (these vary
        from run to run, so they stay out of the fingerprint and of metrics/train.json)."""
        return {**self.choice(), "memory_estimate_mb": self.estimate_mb, "memory_limit_mb": self.limit_mb}


def decide(tp, prof: Profile, base: int, trainable: int, limit: Limit, lora: bool = False, heap_slack: bool = False) -> Plan:
    """The preflight's decision (pure): the configured micro-batch if it fits, or with
    train.auto_batch_size the largest divisor of the global batch that fits; UserError otherwise."""
    ckpt = tp.gradient_checkpointing
    global_batch = tp.batch_size * tp.gradient_accumulation_steps

    def est(m, checkpointing=ckpt):
        return estimate(prof, m, base, trainable, checkpointing, heap_slack)

    def fits(m, checkpointing=ckpt):
        return limit.bytes is None or est(m, checkpointing).total <= limit.bytes

    micro = largest_fitting_divisor(global_batch, fits) if tp.auto_batch_size else (tp.batch_size if fits(tp.batch_size) else None)
    if micro is not None:
        chosen = est(micro)
        return Plan(micro, global_batch // micro, tp.auto_batch_size, round(chosen.total / MB, 1),
                    None if limit.bytes is None else round(limit.bytes / MB, 1))
    tried = 1 if tp.auto_batch_size else tp.batch_size
    e = est(tried)
    fixes = []
    smaller = largest_fitting_divisor(global_batch, fits) if not tp.auto_batch_size else None
    if smaller is not None:
        fixes.append(f"train.batch_size: {smaller} with train.gradient_accumulation_steps: {global_batch // smaller} "
                     f"(same global batch, ~{gb(est(smaller).total)})")
    if not ckpt:
        m_ckpt = largest_fitting_divisor(global_batch, lambda m: fits(m, True))
        if m_ckpt is not None:
            fixes.append(f"train.gradient_checkpointing: true (~{gb(est(tried, True).total)} at micro-batch {tried})"
                         if m_ckpt >= tried else
                         f"train.gradient_checkpointing: true with train.batch_size: {m_ckpt} and "
                         f"train.gradient_accumulation_steps: {global_batch // m_ckpt} (~{gb(est(m_ckpt, True).total)})")
    fixes.append(f"a smaller chunk.block_size (now {prof.block:,})")
    if not lora:  # LoRA trains a few adapter weights: almost no gradients or AdamW state
        fixes.append(f"lora.enabled: true (saves up to {gb(e.gradients + e.optimizer)} of gradients and AdamW state)")
    what = "even a micro-batch of" if tp.auto_batch_size else "a micro-batch of"
    raise UserError(
        f"not enough memory to train: {what} {tried} x {prof.block:,} tokens needs about {gb(e.total)} "
        f"({e.parts()}) but this process may use {gb(limit.bytes)} ({limit.source}"
        f"{'' if LIMIT_ENV in limit.source else f'; {LIMIT_ENV} overrides'}); "
        f"to fit, change one of train.batch_size, train.gradient_accumulation_steps, chunk.block_size, "
        f"train.gradient_checkpointing, lora.enabled: " + "; or ".join(fixes)
    )


def preflight(model, example: dict, collate, tp, lora: bool = False, device: str = "cpu", autocast_dtype=None,
              heap_slack: bool = False, environ=os.environ) -> Plan:
    """Estimate the configured step's peak before the first step and compare it with what this process
    may use. Raises UserError (one line naming the keys to change) when it will not fit."""
    limit = process_limit(device, environ)
    prof = profile(model, example, collate, device if device == "cuda" else "cpu", autocast_dtype)
    base = weight_bytes(model) if device == "cuda" else rss()
    return agree(decide(tp, prof, base, trainable_bytes(model), limit, lora, heap_slack and device != "cuda"), environ)


def agree(plan: Plan, environ=os.environ) -> Plan:
    """Under `accelerate launch` every process must take the same micro-batch and accumulation (the global
    batch and the optimizer steps must line up): with auto_batch_size, the smallest any process picked."""
    if not plan.auto or int(environ.get("WORLD_SIZE", "1")) <= 1:
        return plan
    from accelerate import PartialState
    from accelerate.utils import gather_object

    PartialState()  # joins the process group the Trainer uses later
    smallest = min(gather_object([plan.batch_size]))
    if smallest == plan.batch_size:
        return plan
    global_batch = plan.batch_size * plan.gradient_accumulation_steps
    return Plan(smallest, global_batch // smallest, True, plan.estimate_mb, plan.limit_mb)


# ---- An unfinished run says so -------------------------------------------------------------------

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
        m = json.loads(marker.read_text(encoding="utf-8"))
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

