"""`make gpu-check`'s machine, training-throughput and evaluation-throughput sections (bench/gpu_check.py)."""
import contextlib
import os
import platform
import statistics
import subprocess
import time

from bench.gpu_common import (BASELINES, SHAPES, VARIANTS, Budget, Report, _device, _flops, _md, _sync, flops_per_token,
                              in_worker)


def _machine_rows() -> list[tuple[str, str]]:
    import importlib.metadata as md

    import torch

    rows = []
    if _device() == "cuda":
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
    return rows


def _matmul_peak(n: int, repeats: int) -> float:
    """FLOP/s of an n×n×n bf16 matmul: the MFU denominator, measured rather than the datasheet's (H100 SXM:
    989 TFLOP/s dense bf16; this workplace's machines measured 770-800)."""
    import torch

    dev = _device()
    a, b = torch.randn(n, n, device=dev, dtype=torch.bfloat16), torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(10):  # warm-up: kernel choice and the clocks' ramp
        a @ b
    _sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync()
    peak = 2 * n**3 * repeats / (time.perf_counter() - start)
    del a, b
    if dev == "cuda":
        torch.cuda.empty_cache()
    return peak


def machine_section(rep: Report) -> float:
    rows = _machine_rows()
    n, repeats = SHAPES.matmul_n, 50 if _device() == "cuda" else 5
    peak = _matmul_peak(n, repeats)
    rows.append(("measured bf16 matmul peak", f"{_flops(peak)} ({n}×{n}×{n}, random data, "
                                              f"mean of {repeats} after 10 warm-ups)"))
    rep.set("machine", "## Machine\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {_md(v)} |\n" for k, v in rows))
    return peak


def train_section(rep: Report, budget: Budget, peak: float, only_compile: bool, results: dict) -> None:
    for v in VARIANTS:
        if v.compile != only_compile:
            continue
        wanted = SHAPES.compile_timeout_s if v.compile else SHAPES.variant_timeout_s
        results[v.name] = in_worker(rep, f"train variant {v.name}", budget, wanted, "train", "--variant", v.name)
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
    r = in_worker(rep, "evaluate throughput", budget, SHAPES.variant_timeout_s, "eval")
    if "error" in r:
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
