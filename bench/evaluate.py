"""Evaluate row: the evaluate stage's metrics.evaluate_causal_lm vs Trainer.evaluate(), same blocks.

The baseline is run_clm.py's: a `labels` column equal to input_ids, default_data_collator, and
perplexity = exp(eval_loss). Both sides see the same model and batch size; each timing is the
evaluation call alone (the baseline's Trainer is built before its clock starts).

Each side runs in fresh processes (one side's memory state never carries into the other's), each
doing one untimed warm-up evaluation and then timed ones. Within a process the timed evaluations mostly
agree to a few percent, but one process differs from the next by up to ±8% here (SmolLM2: 3.55-4.16 s
for the same side), so a process is one sample: SmolLM2 spreads each side over several processes,
interleaved.
    python -m bench.evaluate SIDE MODEL_DIR BLOCK_SIZE N_BLOCKS BATCH_SIZE REPEATS WORK_DIR
SIDE: ours (the stage: lmtune.allocator tuning + evaluate_causal_lm), baseline (Trainer.evaluate as
run_clm.py runs it), baseline_tuned (Trainer.evaluate in a process with the same allocator tuning).
"""
import math
import sys
import tempfile
import time
from pathlib import Path

from bench.common import SIDES, Row, emit, median, tune_for, tuned_row, worker


def run_side(side: str, model_dir: Path, block_size: int, n_blocks: int, batch_size: int, repeats: int,
             work: Path) -> dict:
    import transformers
    from transformers import AutoModelForCausalLM

    from bench.train import make_blocks
    from lmtune.eval import metrics

    tune_for(side)  # first thing, as stages/evaluate.py does
    transformers.logging.set_verbosity_error()
    blocks = make_blocks(model_dir, block_size, n_blocks)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        if side == "ours":
            ds = blocks.with_format("torch")  # what stages/evaluate.py passes (loaded from data/chunks)

            def run():
                r = metrics.evaluate_causal_lm(model, ds, batch_size)
                return r["perplexity"], r["n_tokens"]
        else:
            trainer = transformers.Trainer(
                model=model, args=transformers.TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size,
                                                                 report_to="none", disable_tqdm=True),
                eval_dataset=blocks.with_format(None).map(lambda b: {"labels": b["input_ids"]}, batched=True),
                data_collator=transformers.default_data_collator,
            )
            loss_shifts_labels = getattr(trainer, "_loss_shifts_labels", True)

            def run():
                return math.exp(trainer.evaluate()["eval_loss"]), None
        run()  # warm-up, untimed
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            ppl, n_tokens = run()
            times.append(time.perf_counter() - start)
    out = {"seconds": times, "perplexity": ppl, "n_tokens": n_tokens}  # n_tokens: ours only
    if side != "ours":
        out["loss_shifts_labels"] = loss_shifts_labels
    return out


def bench_model(label: str, model_dir: Path, block_size: int, n_blocks: int, batch_size: int, repeats: int,
                work: Path, processes: int = 1, tuned_processes: int = 0) -> list[Row]:
    """`processes` fresh processes per side (`tuned_processes` for the informational baseline_tuned side),
    interleaved with the order rotating; each one untimed warm-up, then `repeats` timed evaluations.
    Start-up plus a SmolLM2 warm-up is ~10 s a process, which is what bounds the counts in 10 minutes."""
    res = {side: [] for side in SIDES}
    plan = [("ours", processes), ("baseline", processes)] + ([("baseline_tuned", tuned_processes)] if tuned_processes else [])
    for i in range(max(n for _, n in plan)):
        sides = [side for side, n in plan if i < n]
        for side in sides[i % len(sides):] + sides[: i % len(sides)]:
            res[side].append(worker("evaluate", side, model_dir, block_size, n_blocks, batch_size, repeats, work))
    o = [t for r in res["ours"] for t in r["seconds"]]
    b = [t for r in res["baseline"] for t in r["seconds"]]
    ours_ppl, base_ppl = res["ours"][0]["perplexity"], res["baseline"][0]["perplexity"]
    n_tokens = res["ours"][0]["n_tokens"]
    ours_tps, base_tps = n_tokens / median(o), n_tokens / median(b)
    rel = abs(ours_ppl - base_ppl) / base_ppl
    note = f"perplexity ours {ours_ppl:.6f} vs Trainer.evaluate {base_ppl:.6f} (relative difference {rel:.1e})"
    ok_ppl = rel <= 1e-4
    if not res["baseline"][0]["loss_shifts_labels"]:
        # transformers 5 divides the eval loss sum by the count of ALL labels (block_size per row, not
        # block_size - 1 predicted ones) unless the model's loss_type maps to ForCausalLMLoss; GPT-2's
        # config has loss_type=None. Undo that factor to compare the same quantity.
        fixed = math.exp(math.log(base_ppl) * block_size / (block_size - 1))
        rel_fixed = abs(ours_ppl - fixed) / fixed
        ok_ppl = rel_fixed <= 1e-4
        note += (f"; the Trainer normalised the loss by {block_size} labels per block instead of {block_size - 1} "
                 f"predicted tokens (model loss_type unset); with that factor undone: {fixed:.6f}, relative "
                 f"difference {rel_fixed:.1e}")
    ratio = ours_tps / base_tps
    name = f"evaluate {label} ({n_blocks} blocks, batch {batch_size})"
    rows = [Row(
        name, ours_tps, base_tps, "tokens/s", ratio, "≥ 1.0×, same perplexity to 1e-4", ratio >= 1.0 and ok_ppl,
        note=(f"{note}; seconds per evaluation, ours {'/'.join(f'{t:.2f}' for t in o)} vs baseline "
              f"{'/'.join(f'{t:.2f}' for t in b)}; ours also computes next-token accuracy (an argmax over the vocabulary); median of {len(o)} "
              f"evaluations per side from {processes} fresh process(es) per side, interleaved (each after one untimed warm-up); ours = the "
              f"stage, which sets lmtune.allocator's malloc tuning; the baseline runs as run_clm.py does, without it"),
        extra={"ours_s": o, "baseline_s": b, "ours_perplexity": ours_ppl, "baseline_perplexity": base_ppl,
               "relative_difference": rel, "perplexity_match": ok_ppl, "n_tokens": n_tokens},
    )]
    if tuned_processes:
        bt = [t for r in res["baseline_tuned"] for t in r["seconds"]]
        rows.append(tuned_row(name, "Trainer.evaluate", ours_tps, n_tokens / median(bt), base_tps, len(bt),
                              {"baseline_tuned_s": bt}))
    return rows


if __name__ == "__main__":
    side, model_dir, block_size, n_blocks, batch_size, repeats, work = sys.argv[1:]
    emit(run_side(side, Path(model_dir), int(block_size), int(n_blocks), int(batch_size), int(repeats), Path(work)))
