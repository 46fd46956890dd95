"""Evaluate row: the evaluate stage's metrics.evaluate_causal_lm vs Trainer.evaluate(), same blocks.

The baseline is run_clm.py's: a `labels` column equal to input_ids, default_data_collator, and
perplexity = exp(eval_loss). Both sides see the same model and batch size; each timing is the
evaluation call alone (the baseline's Trainer is built before its clock starts).
"""
import math
import tempfile
import time
from pathlib import Path

from bench.common import Row, median


def bench_model(label: str, model_dir: Path, blocks, batch_size: int, repeats: int, work: Path) -> Row:
    import transformers
    from transformers import AutoModelForCausalLM

    from lmtune import metrics

    transformers.logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    ours_ds = blocks.with_format("torch")  # what stages/evaluate.py passes (loaded from data/chunks)
    base_ds = blocks.with_format(None).map(lambda b: {"labels": b["input_ids"]}, batched=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        trainer = transformers.Trainer(
            model=model, args=transformers.TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size,
                                                             report_to="none", disable_tqdm=True),
            eval_dataset=base_ds, data_collator=transformers.default_data_collator,
        )
        o, b = [], []
        for _ in range(repeats):  # interleaved
            start = time.perf_counter()
            ours = metrics.evaluate_causal_lm(model, ours_ds, batch_size)
            o.append(time.perf_counter() - start)
            start = time.perf_counter()
            base = trainer.evaluate()
            b.append(time.perf_counter() - start)
    n_tokens = ours["n_tokens"]
    ours_tps, base_tps = n_tokens / median(o), n_tokens / median(b)
    base_ppl = math.exp(base["eval_loss"])
    rel = abs(ours["perplexity"] - base_ppl) / base_ppl
    note = f"perplexity ours {ours['perplexity']:.6f} vs Trainer.evaluate {base_ppl:.6f} (relative difference {rel:.1e})"
    ok_ppl = rel <= 1e-4
    if not getattr(trainer, "_loss_shifts_labels", True):
        # transformers 5 divides the eval loss sum by the count of ALL labels (block_size per row, not
        # block_size - 1 predicted ones) unless the model's loss_type maps to ForCausalLMLoss; GPT-2's
        # config has loss_type=None. Undo that factor to compare the same quantity.
        block = len(blocks[0]["input_ids"])
        fixed = math.exp(base["eval_loss"] * block / (block - 1))
        rel_fixed = abs(ours["perplexity"] - fixed) / fixed
        ok_ppl = rel_fixed <= 1e-4
        note += (f"; the Trainer normalised the loss by {block} labels per block instead of {block - 1} predicted tokens "
                 f"(model loss_type unset); with that factor undone: {fixed:.6f}, relative difference {rel_fixed:.1e}")
    ratio = ours_tps / base_tps
    return Row(
        f"evaluate {label} ({len(blocks)} blocks, batch {batch_size})", ours_tps, base_tps, "tokens/s", ratio,
        "≥ 1.0×, same perplexity to 1e-4", ratio >= 1.0 and ok_ppl,
        note=f"{note}; ours also computes next-token accuracy (an argmax over the vocabulary); median of {repeats}",
        extra={"ours_s": o, "baseline_s": b, "ours_perplexity": ours["perplexity"], "baseline_perplexity": base_ppl,
               "relative_difference": rel, "perplexity_match": ok_ppl, "n_tokens": n_tokens},
    )
