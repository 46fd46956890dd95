"""`make gpu-check`: the pipeline's model stages and its training/evaluation speed on one CUDA GPU.

One prepared script, sized for ≤ 6 minutes on one H100 (bench/README.md says how to run it on a machine
without a package registry). It writes bench/GPU_RESULTS.md (and a copy to $OUT when that is set)
after every section, so a failure or a kill keeps what was measured before it. Sections, cheap first:

1. The machine: GPU, versions, and the measured bf16 matmul peak (8192³, the MFU denominator).
2. The tiny pipeline (GPT-2 from config, tests/fixtures/sotu_small) in a temp copy of the repo, every
   stage of dvc.yaml in order as its `python -m stages.NAME` (no DVC there) under bench/gpu_probe.py, which records the device
   and autocast dtype every layer's forward really ran with. With `train.precision: auto` (bf16), then
   evaluate again with `fp32`; checks: the model stages ran on the GPU in bf16, generations exist and ran
   on the GPU, and the bf16 perplexity is within PPL_BOUND of the fp32 one.
3. Training throughput of GPT-2 124M (from config) at 8 × 1,024 random token ids, each variant in its own
   process: the plain HF Trainer (defaults; bf16) against the project's path
   (lmtune.train.trainer.training_arguments + FiniteLossTrainer + collate_blocks) with SDPA vs eager attention,
   fused AdamW on/off, and torch.compile (last: the slowest to start).
4. Evaluation throughput: lmtune.eval.metrics.evaluate_causal_lm on the device under the placement's autocast
   against Trainer.evaluate, on the same blocks.

Exit codes: 0 all checks passed, 1 a check failed or a section/variant raised (the file says which),
2 no CUDA GPU (one line, nothing run). LMTUNE_GPU_CHECK_ON_CPU=1 runs the same code on the CPU with tiny
shapes and `bf16` (CPU autocast) in place of `auto`: a debug run of the script itself, not a result.
"""
import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ON_CPU = os.environ.get("LMTUNE_GPU_CHECK_ON_CPU") == "1"

# bf16 keeps 8 significant bits, so under autocast each logit comes out rounded to within 2^-9 ≈ 0.2% of its
# size (matmuls accumulate in float32, and lmtune.eval.metrics computes the loss in float32 from those logits).
# The tiny model's logits are small: the output layer is the tied 0.02-std embedding against a layer-normed
# 64-wide state, std ≈ 0.02·√64 = 0.16, and 8 steps barely move it (its perplexity, ~4e4, is near-uniform
# over 50,257 tokens), so |z| < ~2. A token's NLL = logsumexp(z) − z_label then moves by ≤ 2 × 0.2% × 2 ≈
# 0.008 nats, and perplexity = exp(mean NLL) by ≤ 0.8% even if every token's error had the same sign;
# unrelated rounding errors mostly cancel over the ~1,500 validation tokens (the CPU debug run, bf16 autocast
# there too, gives ~1e-5). Asserted: 1%. A forward that escaped autocast would not show here (0 difference):
# bench/gpu_probe.py's per-layer record is the check for that.
PPL_BOUND = 0.01


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


# ---------------------------------------------------------------------------------------------- workers
# Each runs in a fresh process (`python -m bench.gpu_check --worker ...`) and prints one JSON line last:
# a variant that crashes the process or the GPU context cannot take the others with it.

def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _gpt2(attn: str):
    """GPT-2 of SHAPES (124M on the GPU) from config, initialised on the device, seeded: same weights each time."""
    import torch
    import transformers

    s = SHAPES
    cfg = transformers.GPT2Config(vocab_size=s.vocab, n_positions=s.positions, n_embd=s.embd, n_layer=s.layers,
                                  n_head=s.heads)
    torch.manual_seed(0)
    with torch.device(_device()):
        model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=attn)
    return model


def _random_blocks(n_blocks: int):
    """Random token ids cut into SHAPES.seq blocks, as the chunk stage stores them (uint16 fixed-size lists)."""
    import datasets
    import numpy as np

    from lmtune.data import chunking

    ids = np.random.default_rng(0).integers(0, SHAPES.vocab, size=(n_blocks, SHAPES.seq)).astype(np.uint16)
    return datasets.Dataset(chunking.blocks_table(ids))


def _peak_mb() -> float:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else 0.0


def train_worker(name: str, work: Path) -> dict:
    import numpy as np
    import torch
    import transformers

    from lmtune import params
    from lmtune.train import trainer

    transformers.logging.set_verbosity_error()
    v = next(v for v in VARIANTS if v.name == name)
    s = SHAPES
    steps = s.warmup + s.timed
    model = _gpt2(v.attn)
    blocks = _random_blocks(steps * s.batch)  # one epoch is exactly `steps` steps
    times: list[float] = []

    class Timer(transformers.TrainerCallback):
        # The Trainer's own step boundaries; synchronised, so a step's GPU work is inside its interval.
        def on_train_begin(self, args, state, control, **kw):
            _sync()
            times.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            _sync()
            times.append(time.perf_counter())

    out = work / name.replace(" ", "_").replace(",", "")
    if v.side == "lmtune":
        tp = params.load().train.model_copy(update={
            "max_steps": steps, "batch_size": s.batch, "gradient_accumulation_steps": 1, "eval_steps": 0,
            "early_stopping_patience": 0, "precision": s.precision, "torch_compile": v.compile,
        })
        args = trainer.training_arguments(tp, 0, out)
        # No checkpoints (a 124M model's save would only cost wall time; the stage's saves are not timed
        # here); `optim` as trainer.optimizer_name would give without a fused AdamW.
        args = dataclasses.replace(args, save_strategy="no", **({} if v.fused else {"optim": "adamw_torch"}))
        trainer = trainer.FiniteLossTrainer(model=model, args=args, train_dataset=blocks.with_format("numpy"),
                                             data_collator=trainer.collate_blocks)
    else:
        # run_clm.py's way: a `labels` column = input_ids, default_data_collator, TrainingArguments defaults.
        args = transformers.TrainingArguments(
            output_dir=str(out), per_device_train_batch_size=s.batch, max_steps=steps, learning_rate=1e-4, seed=0,
            report_to="none", save_strategy="no", disable_tqdm=True, bf16=v.bf16,
            use_cpu=ON_CPU,  # transformers refuses bf16 on a CPU unless told it is one; a GPU run passes False
        )
        ds = blocks.with_format(None).map(lambda b: {"labels": b["input_ids"]}, batched=True)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=ds,
                                       data_collator=transformers.default_data_collator)
    trainer.add_callback(Timer())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    intervals = np.diff(times)[s.warmup:]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "step_s": float(statistics.median(intervals)), "steps_timed": len(intervals),
        "step_s_min_max": [float(intervals.min()), float(intervals.max())],
        "params": sum(p.numel() for p in model.parameters()), "wpe": model.transformer.wpe.weight.numel(),
        "attn": model.config._attn_implementation, "optim": str(getattr(args.optim, "value", args.optim)),
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32", "compile": bool(args.torch_compile),
        "peak_mb": _peak_mb(), "last_loss": losses[-1] if losses else None, "device": str(args.device),
    }


def eval_worker(work: Path) -> dict:
    import math

    import torch
    import transformers

    from lmtune import device
    from lmtune.eval import metrics
    from lmtune.device import Placement

    transformers.logging.set_verbosity_error()
    s = SHAPES
    blocks = _random_blocks(s.eval_blocks)
    n_tokens = s.eval_blocks * (s.seq - 1)  # tokens scored: each block's first token has no prediction
    auto = device.current(s.precision)

    def ours(placement):
        def run():
            model = _gpt2("sdpa").to(placement.device)
            ds = blocks.with_format("torch")  # what the evaluate stage passes (loaded from data/chunks)

            def once():  # as lmtune.eval.evaluation.evaluate calls it
                return metrics.evaluate_causal_lm(model, ds, s.eval_batch, autocast=placement.autocast)["perplexity"]
            return once
        return run

    def trainer(bf16: bool):
        def run():
            args = transformers.TrainingArguments(output_dir=str(work / "eval"), per_device_eval_batch_size=s.eval_batch,
                                                  report_to="none", disable_tqdm=True, bf16=bf16, use_cpu=ON_CPU)
            t = transformers.Trainer(
                model=_gpt2("sdpa"), args=args, data_collator=transformers.default_data_collator,
                eval_dataset=blocks.with_format(None).map(lambda b: {"labels": b["input_ids"]}, batched=True),
            )
            return lambda: math.exp(t.evaluate()["eval_loss"])
        return run

    name = f"{auto.dtype}".removeprefix("torch.") if auto.dtype else "fp32"
    sides = [
        (f"lmtune evaluate_causal_lm ({name} autocast)", ours(auto)),
        ("lmtune evaluate_causal_lm (fp32)", ours(Placement(auto.device, None))),
        ("Trainer.evaluate, defaults (fp32)", trainer(False)),
        ("Trainer.evaluate, bf16=True", trainer(True)),
    ]
    out = {"n_tokens": n_tokens, "sides": {}}
    for label, make in sides:  # a fresh model per side (same seed, same weights): no side alters another's
        try:
            once = make()
            once()  # warm-up: kernels, allocator, the Trainer's accelerate wrapping
            seconds, ppl = [], None
            for _ in range(s.eval_repeats):
                _sync()
                start = time.perf_counter()
                ppl = once()
                _sync()
                seconds.append(time.perf_counter() - start)
            out["sides"][label] = {"seconds": seconds, "perplexity": ppl}
        except Exception as e:  # noqa: BLE001 - recorded in the table, the other sides still run
            out["sides"][label] = {"error": _one_line(e)}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------------------------------------- main

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


def _worker(args: list[str], timeout: int, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--worker", *args], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {_tail(proc.stderr or proc.stdout)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_section(rep: Report) -> float:
    import importlib.metadata as md

    import torch

    dev = _device()
    rows = []
    if dev == "cuda":
        props = torch.cuda.get_device_properties(0)
        rows += [("GPU", f"{props.name}, {props.multi_processor_count} SMs, {props.total_memory / 2**30:.1f} GiB, "
                         f"compute capability {props.major}.{props.minor}, bf16 {torch.cuda.is_bf16_supported()}"),
                 ("CUDA (torch build) / cuDNN", f"{torch.version.cuda} / {torch.backends.cudnn.version()}")]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 text=True, capture_output=True, timeout=20).stdout.strip()
            rows.append(("driver", drv or "?"))
    else:
        rows.append(("device", f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"))
    rows.append(("python", platform.python_version()))
    versions = []
    for pkg in ("torch", "transformers", "accelerate", "peft", "datasets", "evaluate", "pydantic", "dvclive",
                "huggingface_hub", "tokenizers", "numpy", "pyarrow", "pandas"):
        try:
            versions.append(f"{pkg} {md.version(pkg)}")
        except md.PackageNotFoundError:
            versions.append(f"{pkg} (missing)")
    rows.append(("packages", ", ".join(versions)))

    # The MFU denominator: the best this GPU does on the op training is made of, measured, not the
    # datasheet's (H100 SXM: 989 TFLOP/s dense bf16; this workplace's machines measured 770-800).
    n = SHAPES.matmul_n
    dtype = torch.bfloat16
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(10):  # warm-up: kernel choice and the clocks' ramp
        a @ b
    _sync()
    repeats = 50 if dev == "cuda" else 5
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync()
    peak = 2 * n**3 * repeats / (time.perf_counter() - start)
    del a, b
    if dev == "cuda":
        torch.cuda.empty_cache()
    rows.append(("measured bf16 matmul peak", f"{_flops(peak)} ({n}×{n}×{n}, random data, "
                                              f"mean of {repeats} after 10 warm-ups)"))
    rep.set("machine", "## Machine\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {_md(v)} |\n" for k, v in rows))
    return peak


def _copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("lmtune", "stages", "bench"):
        shutil.copytree(ROOT / d, dest / d, ignore=ignore)
    shutil.copytree(ROOT / "tests" / "fixtures" / "sotu_small", dest / "tests" / "fixtures" / "sotu_small")
    for f in ("params.yaml", "dvc.yaml"):
        shutil.copy2(ROOT / f, dest / f)


def _forwards(probe: dict | None) -> str:
    if not probe or not probe.get("forwards"):
        return "no layer forward seen"
    return ", ".join(f"{n}× {d} {w} weights, autocast {a or 'off'}" for d, w, a, n in probe["forwards"])


def _ran_on(probe: dict | None, dev: str, cast: str | None, check_cast: bool = True) -> bool:
    rows = (probe or {}).get("forwards") or []
    return bool(rows) and all(d == dev and (not check_cast or a == cast) for d, _, a, _ in rows)


def pipeline_section(rep: Report, budget: Budget) -> None:
    import yaml

    dev = _device()
    cast = "bfloat16"  # auto on a bf16 GPU; the CPU debug run asks for bf16 explicitly
    tmp = Path(tempfile.mkdtemp(prefix="lmtune-gpu-check-"))
    repo = tmp / "repo"
    _copy_repo(repo)
    base_params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))

    from lmtune.cli.recipe import deep_update
    from tests.tiny import TINY

    # The tests' tiny pipeline (2-layer GPT-2 from config, real GPT-2 BPE, fixture text) at the width of the
    # committed GPU run (bench/GPU_RESULTS.md), with the precision under test.
    over = deep_update(TINY, {"model": {"gpt2": {"n_embd": 64}}})
    if "since_year" in base_params.get("data", {}):  # a sotu-only filter; the fixture is data.source: files
        over = deep_update(over, {"data": {"since_year": None}})

    def set_precision(precision: str) -> dict:
        p = deep_update(base_params, deep_update(over, {"train": {"precision": precision}}))
        (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False), encoding="utf-8")
        return p

    p = set_precision(SHAPES.precision)
    # Every stage of dvc.yaml, in its (data-flow) order, each as its `cmd` runs it: `python -m stages.NAME`.
    graph = yaml.safe_load((repo / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    modules = {name: st["cmd"].split(" -m ", 1)[1].split()[0] for name, st in graph.items()}
    stages = list(modules)
    eval_stages = [s for s in stages if s.startswith("evaluate")]
    runs: list[dict] = []  # stage, label, rc, seconds, probe, tail
    checks: list[tuple[str, bool, str]] = []

    def render() -> None:
        lines = ["## Tiny pipeline on the device", "",
                 f"dvc.yaml's stages, each as `python -m stages.NAME`, in a temp copy of the repo: GPT-2 from config (2 layers, 64 wide), "
                 f"tests/fixtures/sotu_small, `train.precision: {SHAPES.precision}` then `fp32` for the second "
                 f"evaluation. Forwards: what bench/gpu_probe.py saw each layer call run with.", "",
                 "| stage | exit | seconds | forwards (count × device, weights, autocast) | CUDA peak MB | last output |",
                 "|---|---|---|---|---|---|"]
        for r in runs:
            lines.append(f"| {r['label']} | {r['rc']} | {r['seconds']:.1f} | {_md(_forwards(r['probe']))} | "
                         f"{(r['probe'] or {}).get('cuda_peak_mb', '')} | {_md(r['tail'])} |")
        if checks:
            lines += ["", "| check | result | detail |", "|---|---|---|"]
            lines += [f"| {_md(n)} | {'PASS' if ok else '**FAIL**'} | {_md(d)} |" for n, ok, d in checks]
        rep.set("pipeline", "\n".join(lines))

    def run_stage(stage: str, label: str) -> dict:
        probe_file = tmp / f"probe-{label.replace(' ', '_').replace('(', '').replace(')', '')}.json"
        timeout = budget.timeout(SHAPES.stage_timeout_s)
        r = {"stage": stage, "label": label, "rc": "skipped", "seconds": 0.0, "probe": None, "tail": ""}
        if timeout is None:
            r["tail"] = "skipped: the time budget was spent"
        else:
            start = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, "-m", "bench.gpu_probe", modules[stage]], cwd=repo, text=True,
                    capture_output=True, timeout=timeout,
                    env=_env({"LMTUNE_GPU_PROBE": str(probe_file), "HF_HOME": str(tmp / "hf")}, pythonpath=repo))
                said = [ln for ln in proc.stdout.splitlines() if ln.startswith((f"{stage}:", "evaluate:"))]
                r["rc"] = proc.returncode
                # A stage's own summary lines when it succeeded; the end of its traceback when not.
                r["tail"] = _tail("\n".join(said) if proc.returncode == 0 and said else proc.stdout + "\n" + proc.stderr,
                                  3 if proc.returncode == 0 else 8)
            except subprocess.TimeoutExpired:
                r["rc"], r["tail"] = "timeout", f"killed after {timeout} s"
            r["seconds"] = time.perf_counter() - start
            if probe_file.is_file():
                r["probe"] = json.loads(probe_file.read_text(encoding="utf-8"))
        runs.append(r)
        render()
        if r["rc"] != 0:
            rep.problem(f"pipeline stage {label}: {r['rc']}: {r['tail'][-300:]}")
        return r

    first = {}
    for stage in stages:
        r = first[stage] = run_stage(stage, stage)
        if r["rc"] != 0:
            return  # later stages need its outputs
    metrics_dir = repo / "metrics"
    ppl_bf16 = json.loads((metrics_dir / "eval.json").read_text(encoding="utf-8"))
    set_precision("fp32")
    second = {}
    for stage in eval_stages:
        r = second[stage] = run_stage(stage, f"{stage} (fp32)")
        if r["rc"] != 0:
            break
    ppl_fp32 = json.loads((metrics_dir / "eval.json").read_text(encoding="utf-8")) if all(r["rc"] == 0 for r in second.values()) else {}

    want = f"{dev}, autocast {cast}"
    checks.append((f"train: layers ran on {want}", _ran_on(first["train"]["probe"], dev, cast),
                   _forwards(first["train"]["probe"])))
    timing = json.loads((metrics_dir / "train_timing.json").read_text(encoding="utf-8"))
    checks.append(("train: metrics/train_timing.json device", str(timing.get("device", "")).startswith(dev),
                   f"device {timing.get('device')!r}, {timing.get('tokens_per_second')} tokens/s"))
    for stage in stages[stages.index("train") + 1:]:
        probe = first[stage]["probe"]
        if stage in eval_stages:
            checks.append((f"{stage}: layers ran on {want}", _ran_on(probe, dev, cast), _forwards(probe)))
            if stage in second:
                checks.append((f"{stage} (fp32): layers ran on {dev}, autocast off",
                               _ran_on(second[stage]["probe"], dev, None), _forwards(second[stage]["probe"])))
        elif stage in ("export", "base_samples") or (probe or {}).get("forwards"):
            # Generation: on the device; its autocast is shown, not asserted (sampling is not a metric).
            checks.append((f"{stage}: layers ran on {dev}", _ran_on(probe, dev, None, check_cast=False),
                           _forwards(probe)))
    # The export's samples: every prompt under every decoding strategy (with the base model's beside them
    # when a base_samples stage made those).
    from lmtune.eval import generation
    from lmtune.params import GenerateParams

    gp = GenerateParams(**p["generate"])
    samples_file = repo / "models" / "export" / "samples.json"
    samples = json.loads(samples_file.read_text(encoding="utf-8")) if samples_file.is_file() else []
    expected = len(gp.prompts) * len(generation.strategies(gp))
    keys = ["text", "base_text"] if "base_samples" in stages else ["text"]
    checks.append((f"export: samples.json holds every prompt × strategy ({', '.join(keys)})",
                   len(samples) == expected and all(k in s for s in samples for k in keys),
                   f"{len(samples)} samples (expected {expected}); first: {samples[0].get('text', '')[:60]!r}"
                   if samples else f"no {samples_file.relative_to(repo)}"))
    for model in ("base", "tuned"):
        a = (ppl_bf16.get(model) or {}).get("perplexity")
        b = (ppl_fp32.get(model) or {}).get("perplexity")
        if a is None or b is None:
            checks.append((f"perplexity {model}: bf16 vs fp32", False, f"missing: bf16 {a}, fp32 {b}"))
            continue
        rel = abs(a - b) / b
        checks.append((f"perplexity {model}: |bf16 − fp32| / fp32 ≤ {PPL_BOUND:.0%}", rel <= PPL_BOUND,
                       f"bf16 {a:.4f}, fp32 {b:.4f}: relative difference {rel:.2e}"))
    render()
    for name, ok, detail in checks:
        if not ok:
            rep.problem(f"check failed: {name} ({detail[:200]})")


def train_section(rep: Report, budget: Budget, peak: float, only_compile: bool, results: dict) -> None:
    s = SHAPES
    env = _env()
    with tempfile.TemporaryDirectory(prefix="lmtune-gpu-train-") as work:
        for v in VARIANTS:
            if v.compile != only_compile:
                continue
            timeout = budget.timeout(s.compile_timeout_s if v.compile else s.variant_timeout_s)
            if timeout is None:
                results[v.name] = {"error": "skipped: the time budget was spent"}
            else:
                try:
                    results[v.name] = _worker(["train", "--variant", v.name, "--work", work], timeout, env)
                except subprocess.TimeoutExpired:
                    results[v.name] = {"error": f"killed after {timeout} s"}
                except Exception as e:  # noqa: BLE001 - one variant's failure is a row, not the end
                    results[v.name] = {"error": _one_line(e)}
            if "error" in results[v.name]:
                rep.problem(f"train variant {v.name}: {results[v.name]['error'][:300]}")
            rep.set("train", _train_table(results, peak))


def _train_table(results: dict, peak: float) -> str:
    s = SHAPES
    tokens = s.batch * s.seq
    head = [
        f"## Training throughput: GPT-2 from config ({s.layers} layers, {s.embd} wide, {s.heads} heads, "
        f"vocab {s.vocab}), {s.batch} × {s.seq:,} random token ids per step", "",
        f"Median step over {s.timed} timed steps after {s.warmup} warm-up steps (the Trainer's own step "
        "boundaries, synchronised), each variant a fresh process. FLOPs/token = 6·N + 12·L·d·T (N: parameters "
        "without the position embeddings; 12·L·d·T: attention's QKᵀ and AV forward and backward, full T×T); "
        f"MFU = FLOPs/token × tokens/s ÷ the measured bf16 matmul peak ({_flops(peak)}). "
        "Trainer rows: a plain HF Trainer as run_clm.py runs it (labels column, default_data_collator, "
        "TrainingArguments defaults); lmtune rows: `trainer.training_arguments` from params.yaml's train "
        "section + `FiniteLossTrainer` + `collate_blocks`, as the train stage builds them.", "",
        "| variant | attention | optimizer | precision | compile | ms/step | tokens/s | MFU | "
        "× Trainer defaults | × Trainer bf16 | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base_tps = {b: tokens / results[b]["step_s"] for b in BASELINES if "step_s" in results.get(b, {})}
    rows = []
    for v in VARIANTS:
        r = results.get(v.name)
        if r is None:
            continue
        if "error" in r:
            rows.append(f"| {_md(v.name)} | {v.attn} | | | {v.compile} | error: {_md(r['error'])} | | | | | |")
            continue
        tps = tokens / r["step_s"]
        mfu = flops_per_token(r["params"], r["wpe"], s.layers, s.embd, s.seq) * tps / peak
        ratios = [f"{tps / base_tps[b]:.2f}×" if b in base_tps else "" for b in BASELINES]
        rows.append(f"| {_md(v.name)} | {r['attn']} | {r['optim']} | {r['precision']} | {r['compile']} | "
                    f"{r['step_s'] * 1e3:.1f} | {tps:,.0f} | {mfu:.1%} | {ratios[0]} | {ratios[1]} | {r['peak_mb']:,.0f} |")
    return "\n".join(head + rows)


def eval_section(rep: Report, budget: Budget) -> None:
    timeout = budget.timeout(SHAPES.variant_timeout_s)
    if timeout is None:
        rep.problem("evaluate throughput: skipped, the time budget was spent")
        return
    try:
        with tempfile.TemporaryDirectory(prefix="lmtune-gpu-eval-") as work:
            r = _worker(["eval", "--work", work], timeout, _env())
    except subprocess.TimeoutExpired:
        rep.problem(f"evaluate throughput: killed after {timeout} s")
        return
    n = r["n_tokens"]
    ref = r["sides"].get("Trainer.evaluate, bf16=True", {})
    ref_tps = n / statistics.median(ref["seconds"]) if "seconds" in ref else None
    lines = [f"## Evaluation throughput: the same GPT-2 ({SHAPES.eval_blocks} blocks × {SHAPES.seq:,} random "
             f"token ids, batch {SHAPES.eval_batch}, {n:,} scored tokens)", "",
             f"Median of {SHAPES.eval_repeats} timed evaluations after one warm-up; a fresh model (same seed, same "
             "weights) per side. Perplexities differ between the sides beyond precision: Trainer.evaluate "
             "averages per batch and over every label position (see bench/RESULTS.md's evaluate row).", "",
             "| side | seconds | tokens/s | × Trainer.evaluate bf16 | perplexity |", "|---|---|---|---|---|"]
    for label, side in r["sides"].items():
        if "error" in side:
            lines.append(f"| {_md(label)} | error: {_md(side['error'])} | | | |")
            rep.problem(f"evaluate throughput {label}: {side['error'][:300]}")
            continue
        sec = statistics.median(side["seconds"])
        ratio = f"{n / sec / ref_tps:.2f}×" if ref_tps else ""
        lines.append(f"| {_md(label)} | {sec:.3f} | {n / sec:,.0f} | {ratio} | {side['perplexity']:.2f} |")
    rep.set("evaluate", "\n".join(lines))


def section(rep: Report, name: str, fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the other sections still run
        rep.problem(f"{name}: {_one_line(e)}")
        rep.set(f"error {name}", f"## {name}: error\n\n```\n{traceback.format_exc()[-3000:]}\n```")
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="results file (default: bench/GPU_RESULTS.md; CPU debug: a temp dir)")
    ap.add_argument("--sections", default="machine,pipeline,train,eval",
                    help="comma-separated subset to run (default: all; train needs machine's matmul peak)")
    ap.add_argument("--worker", choices=["train", "eval"], help=argparse.SUPPRESS)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available() and not ON_CPU:
        print(f"gpu-check: no CUDA GPU here (torch {torch.__version__} sees none); this check needs one, "
              "nothing was run", file=sys.stderr)
        return 2
    if a.worker:
        os.environ.update(ENV)
        result = train_worker(a.variant, a.work) if a.worker == "train" else eval_worker(a.work)
        print(json.dumps(result), flush=True)
        return 0

    out = a.out or (Path(tempfile.mkdtemp(prefix="gpu-check-cpu-")) / "GPU_RESULTS.md" if ON_CPU
                    else ROOT / "bench" / "GPU_RESULTS.md")
    rep = Report(out)
    budget = Budget(SHAPES.budget_s)
    print(f"gpu-check: writing {out}", flush=True)
    wanted = set(a.sections.split(","))
    results: dict = {}
    steps = [
        ("machine", "machine", lambda: machine_section(rep)),
        ("pipeline", "tiny pipeline", lambda: pipeline_section(rep, budget)),
        ("train", "training throughput", lambda: peak and train_section(rep, budget, peak, False, results)),
        ("eval", "evaluation throughput", lambda: eval_section(rep, budget)),
        # torch.compile last: the slowest to start, so the budget cuts it before anything else.
        ("train", "training throughput (compile)", lambda: peak and train_section(rep, budget, peak, True, results)),
    ]
    peak = None
    for key, name, fn in steps:
        if key in wanted:
            value = section(rep, name, fn)
            if key == "machine":
                peak = value
            print(f"gpu-check: {name} done ({time.monotonic() - rep.started:.0f} s)", flush=True)
    rep.write()
    print(Path(out).read_text(encoding="utf-8"))
    verdict = f"{len(rep.problems)} problem(s)" if rep.problems else "all checks passed"
    print(f"gpu-check: {verdict} in {time.monotonic() - rep.started:.0f} s; results in {out}", flush=True)
    return 1 if rep.problems else 0


if __name__ == "__main__":
    sys.exit(main())
