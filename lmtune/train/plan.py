"""The memory preflight: before the first step, the micro-batch a run trains with (the configured one if its
estimated peak (lmtune.train.estimate) fits what the process may use (lmtune.train.limits); with
train.auto_batch_size the largest divisor of the global batch that fits), or one error naming the keys to change.
"""
import functools
import os
from dataclasses import dataclass
from typing import Callable

from lmtune.errors import UserError
from lmtune.train.estimate import Estimate, Profile, estimate, profile, trainable_bytes, weight_bytes
from lmtune.train.sharding import gathered_bytes, per_process, sharding
from lmtune.train.limits import LIMIT_ENV, MB, Limit, gb, process_limit, rss


def largest_fitting_divisor(global_batch: int, fits: Callable[[int], bool]) -> int | None:
    """The largest micro-batch that divides `global_batch` (so accumulation keeps it exact) and fits."""
    for m in sorted((d for d in range(1, global_batch + 1) if global_batch % d == 0), reverse=True):
        if fits(m):
            return m
    return None


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


def decide(tp, prof: Profile, base: int, trainable: int, limit: Limit, lora: bool = False, heap_slack: bool = False,
           share: Callable[[Estimate], Estimate] = lambda e: e) -> Plan:
    """The preflight's decision (pure): the configured micro-batch if it fits, or with
    train.auto_batch_size the largest divisor of the global batch that fits; UserError otherwise.
    share: one process's part of a whole-model estimate (lmtune.train.sharding.per_process under FSDP/ZeRO)."""
    ckpt = tp.gradient_checkpointing
    global_batch = tp.batch_size * tp.gradient_accumulation_steps

    def est(m, checkpointing=ckpt):
        return share(estimate(prof, m, base, trainable, checkpointing, heap_slack))

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
              heap_slack: bool = False, environ=os.environ, loss_chunk_rows: int | None = None) -> Plan:
    """Estimate the configured step's peak before the first step and compare it with what this process
    may use. Raises UserError (one line naming the keys to change) when it will not fit.
    loss_chunk_rows: the chunked loss's positions per chunk (lmtune.train.trainer.loss_chunk_rows)."""
    limit = process_limit(device, environ)
    prof = profile(model, example, collate, device if device == "cuda" else "cpu", autocast_dtype, loss_chunk_rows)
    base = weight_bytes(model) if device == "cuda" else rss()
    share = functools.partial(per_process, sh=sharding(environ), weights=weight_bytes(model),
                              gathered=gathered_bytes(model), cuda=device == "cuda")
    return agree(decide(tp, prof, base, trainable_bytes(model), limit, lora, heap_slack and device != "cuda", share),
                 environ)


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
