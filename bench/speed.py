"""Speed rows of issue 23, SmolLM2-135M on this CPU, each side in fresh processes, ratios from the same run:

- precision: the train stage's loop (lmtune.train.trainer.train) at the default shape (4 x 256 tokens per
  step, SOTU blocks), train.precision bf16 (CPU autocast) vs fp32: median step time over the steps after
  the first, tokens/s = tokens per step / that. Target: bf16 >= 1.5x fp32.
- loss: the LM head + loss alone, forward and backward, at 4 x 4,096 tokens (SmolLM2's own head weight,
  random final hidden states): the model's own loss over the whole logits (transformers' ForCausalLMLoss:
  logits -> fp32 -> cross-entropy) vs the chunked loss (lmtune.eval.lm_head). The logits term is the peak
  RSS above what the process held before the loss (the head's input and weight), VmHWM reset just before
  (/proc/self/clear_refs); the rest of a step is the same on both sides. Step time: the median of the steps
  after an untimed first one, in a process whose allocator is tuned as the train stage's is
  (lmtune.allocator): a training step reuses the memory of the one before, and the first step of a fresh
  process pays the page faults of every buffer once (~2.5 s per GB on this VM). Targets: chunked >= 4x
  smaller, step time no slower. Run in the precision training uses on this CPU (bf16 autocast where native).

    python -m bench.speed [--steps 5] [--repeats 1] [--markdown FILE]
    python -m bench.speed precision MODEL_DIR PRECISION STEPS WORK_DIR      (one worker)
    python -m bench.speed loss MODEL_DIR KIND BATCH BLOCK PRECISION          (one worker; KIND plain|chunked)
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, emit, machine, median, table, worker

PRECISION_TARGET = 1.5
LOGITS_TARGET = 4.0


def precision_worker(model_dir: Path, precision: str, steps: int, work: Path) -> dict:
    """One side of the precision row in this (fresh) process: trainer.train as the stage calls it."""
    from lmtune import allocator

    allocator.tune_cpu_allocator()  # first, as stages/train.py does
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.train import StepTimer, make_blocks
    from lmtune import params
    from lmtune.train import trainer

    transformers.logging.set_verbosity_error()
    p = params.load()
    batch, block = p.train.batch_size, p.chunk.block_size
    tp = p.train.model_copy(update={"max_steps": steps, "precision": precision, "gradient_accumulation_steps": 1,
                                    "save_steps": 10**6, "eval_steps": 0, "early_stopping_patience": 0})
    blocks = make_blocks(model_dir, block, batch * steps).with_format("numpy")
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(model_dir)
    timer = StepTimer()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        _, _, timing = trainer.train(model, tok, blocks, None, tp, p.seed, Path(tmp) / "ckpt", "bench")
    timer.close()
    step = timer.step_seconds()
    return {"step_s": step, "tokens_per_s": batch * block / step, "precision": timing["precision"],
            "lm_loss": timing["lm_loss"], "steps": steps}


def _rss_now() -> int:
    from lmtune.train import limits

    return limits.rss()


def loss_worker(model_dir: Path, kind: str, batch: int, block: int, precision: str, steps: int = 3) -> dict:
    """One side of the loss row: SmolLM2's head on random hidden states, forward + backward `steps` times;
    the peak RSS above the start, and the median seconds of the steps after the first."""
    from lmtune import allocator

    allocator.tune_cpu_allocator()  # first, as stages/train.py does
    import torch
    import torch.nn.functional as F
    from safetensors import safe_open

    from lmtune.eval import lm_head
    from lmtune.train import limits

    files = sorted(Path(model_dir).glob("*.safetensors"))
    with safe_open(str(files[0]), "pt") as f:
        name = "lm_head.weight" if "lm_head.weight" in f.keys() else "model.embed_tokens.weight"  # tied
        weight = f.get_tensor(name).float()
    vocab, width = weight.shape
    head = torch.nn.Linear(width, vocab, bias=False)
    head.weight = torch.nn.Parameter(weight)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(batch, block, width, generator=g).requires_grad_()
    labels = torch.randint(0, vocab, (batch, block), generator=g)
    autocast = torch.autocast("cpu", torch.bfloat16) if precision == "bf16" else torch.autocast("cpu", enabled=False)

    def step():
        with autocast:
            if kind == "plain":  # transformers' ForCausalLMLoss on the model's whole logits
                logits = head(hidden).float()
                loss = F.cross_entropy(logits.reshape(-1, vocab), lm_head.shifted_targets(labels), ignore_index=-100)
            else:
                loss = lm_head.chunked_loss(hidden, head, labels)
        loss.backward()
        hidden.grad = head.weight.grad = None  # as the optimizer's zero_grad between steps
        return float(loss.detach())

    Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")  # VmHWM := VmRSS: the peak from here on
    start = _rss_now()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    peak = limits.peak_rss()
    return {"kind": kind, "seconds": median(times[1:] or times), "step_seconds": times,
            "peak_above_mb": (peak - start) / limits.MB, "loss": loss, "logits_mb": batch * block * vocab * 4 / limits.MB}


def _each(runs: list[dict]) -> str:
    return " / ".join(f"{r['tokens_per_s']:.1f}" for r in runs)


def precision_row(model_dir: Path, steps: int, repeats: int, work: Path) -> Row:
    runs = {s: [] for s in ("bf16", "fp32")}
    for _ in range(repeats):  # interleaved: a change in the machine's load hits both sides alike
        for side in runs:
            runs[side].append(worker("speed", "precision", model_dir, side, steps, work, timeout=1800))
    bf16, fp32 = (median([r["tokens_per_s"] for r in runs[s]]) for s in ("bf16", "fp32"))
    return Row("train step SmolLM2-135M 4×256, bf16 autocast vs fp32 (CPU)", bf16, fp32, "tokens/s", bf16 / fp32,
               f"≥ {PRECISION_TARGET}×", bf16 / fp32 >= PRECISION_TARGET,
               note=(f"median step after the first of {steps} steps, {repeats} fresh process(es) per side, "
                     f"interleaved; train.precision bf16 vs fp32 through lmtune.train.trainer.train "
                     f"(loss: {runs['bf16'][0]['lm_loss']}); runs (tokens/s) bf16 {_each(runs['bf16'])}, "
                     f"fp32 {_each(runs['fp32'])}"),
               extra={"runs": runs})


def loss_rows(model_dir: Path, repeats: int, precision: str, batch: int = 4, block: int = 4096) -> list[Row]:
    runs = {k: [] for k in ("plain", "chunked")}
    for _ in range(repeats):
        for kind in runs:
            runs[kind].append(worker("speed", "loss", model_dir, kind, batch, block, precision, timeout=1800))
    mem = {k: median([r["peak_above_mb"] for r in v]) for k, v in runs.items()}
    sec = {k: median([r["seconds"] for r in v]) for k, v in runs.items()}
    each = "; ".join(f"{k} " + " / ".join(f"{t:.2f}" for r in v for t in r["step_seconds"]) for k, v in runs.items())
    how = (f"{repeats} fresh process(es) per side, allocator tuned as train's, median step after the first "
           f"(step seconds: {each}), {precision}; LM head + loss forward and backward at "
           f"{batch}×{block:,} tokens (SmolLM2's head weight, random hidden states); whole fp32 logits "
           f"{runs['plain'][0]['logits_mb']:,.0f} MB; losses {runs['plain'][0]['loss']:.4f} plain, "
           f"{runs['chunked'][0]['loss']:.4f} chunked")
    return [
        Row(f"logits term {batch}×{block:,} SmolLM2, chunked vs plain loss", mem["chunked"], mem["plain"], "MB",
            mem["plain"] / mem["chunked"], f"≥ {LOGITS_TARGET}× smaller", mem["plain"] / mem["chunked"] >= LOGITS_TARGET,
            note=f"peak RSS above the start of the loss (VmHWM reset); ratio = plain / chunked; {how}",
            extra={"runs": runs}),
        Row(f"loss step time {batch}×{block:,} SmolLM2, chunked vs plain", sec["chunked"], sec["plain"], "s",
            sec["plain"] / sec["chunked"], "≥ 1.0× (no slower)", sec["plain"] / sec["chunked"] >= 1.0,
            note=f"ratio = plain / chunked seconds; {how}"),
    ]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--loss-precision", default=None, help="bf16 | fp32 (default: what auto trains with here)")
    ap.add_argument("--loss-block", type=int, default=4096, help="positions per block of the loss rows (4 blocks)")
    ap.add_argument("--only", default="precision,loss")
    ap.add_argument("--markdown", type=Path, default=None)
    ap.add_argument("--smollm2-dir", type=Path, default=Path.home() / ".cache" / "lmtune-bench" / "smollm2")
    args = ap.parse_args(argv)
    from bench.__main__ import smollm2_dir
    from lmtune.train import trainer

    smol = smollm2_dir(args.smollm2_dir)
    loss_precision = args.loss_precision or ("bf16" if trainer.cpu_bf16_here(False) else "fp32")
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmtune-speed-") as work:
        if "precision" in args.only:
            rows.append(precision_row(smol, args.steps, args.repeats, Path(work)))
        if "loss" in args.only:
            rows += loss_rows(smol, args.repeats, loss_precision, block=args.loss_block)
    text = table(rows)
    print(text)
    for r in rows:
        print(f"- {r.name}: {r.note}")
    if args.markdown:
        info = machine()
        args.markdown.write_text(f"{text}\n\n" + "\n".join(f"- {r.name}: {r.note}" for r in rows)
                                 + f"\n\nmachine: {info}; {time.perf_counter() - start:.0f} s\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "precision":
        emit(precision_worker(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), Path(sys.argv[5])))
    elif len(sys.argv) > 1 and sys.argv[1] == "loss":
        emit(loss_worker(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]))
    else:
        main()
