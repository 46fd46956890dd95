"""The memory preflight under FSDP / DeepSpeed ZeRO: what one process holds when the training state is sharded.

lmtune.train.estimate counts a whole model's state in every process (DDP). With N processes sharding it:

    gradients   T / N      each process keeps the gradient shard of its own parameters (T: trainable bytes)
    optimizer   2T / N     AdamW's two moments, only for that shard
    parameters  W / N      FSDP full shard and ZeRO-3 (W: all weight bytes); ZeRO-2 keeps them whole
    + gathered  2 (R + L)  the one unit being computed is gathered whole, its gradient too before the
                           reduce-scatter: the root unit (R: embeddings, output head, final norm: whatever no
                           transformer layer holds, gathered for the whole step) and the largest layer (L)

On CUDA the process's base is then the weight shard plus the gathered units instead of the whole model. On
CPU the base is the process's resident memory before training, which already holds the full model as loaded
(glibc keeps the freed whole tensors' pages), so only the gathered units are added to it.
The layout comes from the launcher's environment (accelerate sets it from the config file).
"""
import dataclasses
from dataclasses import dataclass

from lmtune.train.estimate import Estimate, _checkpointable_layers, weight_bytes


@dataclass(frozen=True)
class Sharding:
    shards: int            # processes the state is split over (1: none)
    parameters: bool       # parameters sharded too (FSDP, ZeRO-3), not only gradients and AdamW state

    @property
    def on(self) -> bool:
        return self.shards > 1


NONE = Sharding(1, False)


def sharding(environ) -> Sharding:
    """FSDP (any version: FSDP2 always shards the parameters) or DeepSpeed ZeRO-2/3 from `accelerate launch`'s
    environment, over the WORLD_SIZE processes; NONE for DDP or one process."""
    world = int(environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return NONE
    if environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return Sharding(world, environ.get("FSDP_SHARDING_STRATEGY", "") not in ("SHARD_GRAD_OP", "2", "NO_SHARD", "3"))
    if environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        stage = int(environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "0") or 0)
        return Sharding(world, stage >= 3) if stage >= 2 else NONE
    return NONE


def gathered_bytes(model) -> int:
    """2 (R + L) of the module docstring: the root unit and the largest layer, parameters and gradients."""
    layers = [sum(p.numel() * p.element_size() for p in layer.parameters()) for layer in _checkpointable_layers(model)]
    root = weight_bytes(model) - sum(layers)
    return 2 * (root + max(layers, default=0))


def per_process(e: Estimate, sh: Sharding, weights: int, gathered: int, cuda: bool) -> Estimate:
    """One process's share of estimate `e` (made for the whole model) under sharding `sh`."""
    if not sh.on:
        return e
    base = e.base
    if sh.parameters:
        base = (e.base - weights + weights // sh.shards if cuda else e.base) + gathered
    return dataclasses.replace(e, base=base, gradients=e.gradients // sh.shards, optimizer=e.optimizer // sh.shards)
