"""Shared parts of `make gpu-check` (bench/gpu_check.py): the shapes, the variants, the results file, the
time budget, child processes (run_module, in_worker) and the small formatting helpers."""
import contextlib
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ON_CPU = os.environ.get("LMTUNE_GPU_CHECK_ON_CPU") == "1"


@dataclasses.dataclass(frozen=True)
class Shapes:
    matmul_n: int       # square matmul for the peak: 2·n³ FLOP
    layers: int         # the benchmarked GPT-2 (124M: 12 layers, 768 wide, 12 heads, 50,257 tokens, 1,024 positions)
    embd: int
    heads: int
    vocab: int
    positions: int
    batch: int          # sequences per step
    seq: int            # tokens per sequence
    warmup: int         # steps not timed (the compile variant compiles in its first step)
    timed: int          # steps timed
    eval_blocks: int
    eval_batch: int
    eval_repeats: int
    precision: str      # train.precision: auto (bf16 on an H100); the CPU debug run asks for bf16 explicitly
    budget_s: int       # the whole script; what does not fit is recorded as skipped
    stage_timeout_s: int
    variant_timeout_s: int
    compile_timeout_s: int


# On an H100 a GPT-2 124M step at 8 × 1,024 takes ~20-40 ms in bf16 (~0.15 s in fp32), so 5 warm-up +
# 30 timed steps cost ~1-5 s a variant; start-up (imports, model init) is ~10 s and compile ~1 min.
GPU = Shapes(8192, 12, 768, 12, 50257, 1024, 8, 1024, 5, 30, 64, 8, 5, "auto", 355, 120, 120, 200)
CPU = Shapes(256, 2, 64, 2, 50257, 128, 2, 64, 1, 3, 8, 4, 2, "bf16", 900, 300, 300, 400)
SHAPES = CPU if ON_CPU else GPU

ENV = {
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1",
}


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    side: str                   # "trainer": plain HF Trainer; "lmtune": the train stage's path
    attn: str = "sdpa"
    fused: bool = True          # lmtune: adamw_torch_fused (trainer.optimizer_name) vs adamw_torch (foreach)
    bf16: bool = False          # trainer: bf16=True
    compile: bool = False


VARIANTS = [
    Variant("Trainer, defaults", "trainer"),
    Variant("Trainer, bf16=True", "trainer", bf16=True),
    Variant("lmtune (bf16, SDPA, fused AdamW)", "lmtune"),
    Variant("lmtune, eager attention", "lmtune", attn="eager"),
    Variant("lmtune, AdamW not fused", "lmtune", fused=False),
    Variant("lmtune + torch_compile", "lmtune", compile=True),
]
BASELINES = ("Trainer, defaults", "Trainer, bf16=True")


def flops_per_token(n_params: int, wpe: int, layers: int, embd: int, seq: int) -> float:
    """Training FLOPs per token: 6·N + 12·L·d·T (PaLM's appendix B; nanoGPT's estimate_mfu).

    6·N: each weight does one multiply-add (2 FLOPs) per token forward and two backward. N excludes the
    position embeddings (a lookup, no matmul); the token embeddings count once, as the tied output layer's
    matmul. 12·L·d·T: attention's QKᵀ and AV, 2·2·T·d FLOPs per token and layer forward, ×3 with the
    backward; full T×T (a causal kernel skips about half of it, so this is an upper bound on work done).
    GPT-2 124M at T = 1,024: 6 × 123,653,376 + 12 × 12 × 768 × 1,024 = 741.9M + 113.2M = 855.2M FLOP/token.
    """
    return 6 * (n_params - wpe) + 12 * layers * embd * seq


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"[:400]


def _tail(text: str, n: int = 6) -> str:
    """The last n lines worth reading: progress bars (`…%|███|…`) left out."""
    lines = [ln for ln in (text or "").replace("\r", "\n").splitlines() if ln.strip() and "%|" not in ln]
    return " ⏎ ".join(lines[-n:])[-900:]


def _flops(x: float) -> str:
    return f"{x / 1e12:.1f} TFLOP/s" if x >= 1e12 else f"{x / 1e9:.1f} GFLOP/s"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


class Report:
    """The results file, rewritten whole after every section (and copied to $OUT)."""

    def __init__(self, path: Path):
        self.path = path
        self.started = time.monotonic()
        self.sections: dict[str, str] = {}
        self.problems: list[str] = []

    def set(self, key: str, text: str) -> None:
        self.sections[key] = text
        self.write()

    def problem(self, what: str) -> None:
        self.problems.append(what)
        print(f"gpu-check: {what}", file=sys.stderr, flush=True)

    def write(self) -> None:
        mode = ("**CPU debug run** (`LMTUNE_GPU_CHECK_ON_CPU=1`): the script's own test with tiny shapes on the "
                "CPU, not a GPU result" if ON_CPU else "one CUDA GPU")
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        head = (f"# GPU check\n\nWritten by `make gpu-check` (`bench/gpu_check.py`, {mode}) on {when}, "
                f"{time.monotonic() - self.started:.0f} s into the run. How to run it: `bench/README.md`.\n")
        status = ("\n**Problems:** " + "; ".join(_md(p) for p in self.problems) + "\n") if self.problems else ""
        text = head + status + "".join(f"\n{body.rstrip()}\n" for body in self.sections.values())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.path)
        if os.environ.get("OUT"):
            with contextlib.suppress(OSError):
                shutil.copy2(self.path, Path(os.environ["OUT"]) / self.path.name)


class Budget:
    def __init__(self, seconds: int):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timeout(self, wanted: int) -> int | None:
        """`wanted`, cut to what is left; None when under 15 s are left (the step is skipped)."""
        left = int(self.left())
        return min(wanted, left) if left >= 15 else None


def _env(extra: dict | None = None, pythonpath: Path = ROOT) -> dict:
    path = os.pathsep.join([str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, **ENV, "PYTHONPATH": path, **(extra or {})}


SKIPPED = "skipped: the time budget was spent"


def run_module(budget: Budget, wanted_s: int, args: list[str], env: dict, cwd: Path = ROOT) -> tuple[int | str, str, str]:
    """`python -m ARGS` in a fresh process, output captured, within what is left of `budget` (at most `wanted_s`).

    Returns (rc, stdout, stderr): rc is the exit code, or "skipped" (under 15 s left: nothing run) or "timeout"
    (killed); for those two, stderr is the one line that says so. Never raises for the child's failure: one
    stage's or variant's failure is a row of the results, and the others still run.
    """
    timeout = budget.timeout(wanted_s)
    if timeout is None:
        return "skipped", "", SKIPPED
    try:
        proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, text=True, encoding="utf-8",
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", "", f"killed after {timeout} s"
    return proc.returncode, proc.stdout, proc.stderr


def in_worker(rep: Report, what: str, budget: Budget, wanted_s: int, kind: str, *args: str) -> dict:
    """`python -m bench.gpu_check --worker KIND ARGS --work DIR` (DIR a fresh temp dir, removed after) through
    run_module: the worker's last stdout line as JSON, or {"error": why} (skipped, killed, or its exit code and
    the end of its output), which also goes to the report's problems as `WHAT: why`."""
    with tempfile.TemporaryDirectory(prefix=f"lmtune-gpu-{kind}-") as work:
        rc, out, err = run_module(budget, wanted_s, ["bench.gpu_check", "--worker", kind, *args, "--work", work], _env())
    if rc != 0:
        why = err if isinstance(rc, str) else f"exit {rc}: {_tail(err or out)}"
    else:
        try:
            return json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            why = f"exit 0 without a JSON result line: {_tail(out + err)}"
    rep.problem(f"{what}: {why[:300]}")
    return {"error": why}
