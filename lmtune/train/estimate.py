"""Training memory, what one step will need: a fake-tensor count of the model's saved activations plus
arithmetic on what the run holds.

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
                       With the chunked loss (lmtune.eval.lm_head, the Trainer's default for the models
                       it knows): CHUNKED_LOGITS_BUFFERS x one chunk's fp32 logits, whatever the batch and
                       block, and the fake pass runs without labels (no whole log-softmax is saved).

Heap slack (CPU, tuned allocator): torch asks glibc for 64-byte-aligned memory, so glibc carves each
block from a slightly larger free chunk, and a freed logits-sized hole is a few bytes too small for the
next step's identical request unless a neighbour is free too. With the 1 GiB mmap threshold of
lmtune.allocator those blocks stay in the heap, so its high-water mark holds some of the step's four
logits-sized buffers (logits, log-softmax, two gradients) twice. Measured (bench/memory.py, fresh
processes, tiny GPT-2 whose logits are ~40% of its peak): 0.5 to 4 logits-sized blocks above the live
tensors, the same run to run only in distribution: the heap grows by one block at a random step (after
step 2, or 9, or 51 of 60) depending on which small allocations take the holes' edges. SmolLM2 at
4 x 256: 4.79 GB tuned against 4.42 untuned over 24 steps, 1.8 blocks (bench/RESULTS.md).
The estimate adds 3 blocks (with the chunked loss: half a chunk and 0.4 x the gradients' bytes,
HEAP_SLACK_CHUNKED and HEAP_SLACK_GRADIENTS). It adds none for logits of lmtune.allocator.MMAP_THRESHOLD
(1 GiB) or more (glibc maps those afresh and unmaps them on free), nor without the tuning, nor on CUDA (its caching
allocator is measured by its live tensors).

`bench/memory.py` (`make bench`) compares the estimate with the median measured peak of fresh runs
(targets: within +-25%, never more than 10% below). tests/test_memory.py checks the same bounds with
glibc's own allocator settings (LMTUNE_MALLOC_TUNING=0), where one run's peak is the live tensors'
and repeats to ~1%; with the tuning a single run of the tiny model can land anywhere in the range above.
"""
import contextlib
from dataclasses import dataclass

from lmtune.train.limits import gb

ADAMW_STATES = 2           # exp_avg and exp_avg_sq per trainable parameter, each of its dtype
LOGITS_BUFFERS = 2         # fp32 gradients of the log-softmax and of the logits, live together
HEAP_SLACK_LOGITS = 3      # logits-sized blocks the tuned glibc heap holds beyond them (module docstring)
# Chunked loss (lmtune.eval.lm_head): per chunk its logits (autocast dtype), their fp32 copy turned into the
# gradient in place, and that gradient in the matmul dtype, plus the hidden-state and weight gradients kept for
# backward. Measured (bench/memory.py, tiny GPT-2, bf16 autocast, glibc untuned): peak minus the other terms
# 264 MB with 64 MiB chunks, 451 MB with one 196 MiB chunk (the whole 4 x 256 batch): 3 chunks covers both.
CHUNKED_LOGITS_BUFFERS = 3
# The tuned heap's holes with the chunked loss: half a chunk, plus 0.4 x the gradients' bytes, which every step
# frees (zero_grad to None) and allocates again between the backward pass's other buffers. Measured peak minus
# the other terms and the three chunk buffers (bench/memory.py, tuned, 5-10 steps; runs over two sessions):
# - tiny GPT-2 (13 MB of gradients, one whole-batch chunk of 196 MiB): the peak lands on one of a few levels
#   about a chunk apart, -0.7 to +1.0 chunks (single runs 1,077-1,442 MB at 4 x 256, 1,096-1,466 MB at
#   1 x 1,024), and the bench's target (the estimate within -10%..+25% of the median) holds at every one of
#   those levels only for 3.3-3.5 chunks;
# - SmolLM2 (513 MB of gradients): +94 to +353 MB at 4 x 256, 1 x 1,024 and 2 x 512 (192 MiB chunks), but
#   +276 MB at 2 x 256 and +429 MB at 1 x 256 (chunks of 96 and 48 MiB), +490 MB in the default's own 126-step
#   run at 2 x 256: the smaller the chunks, the less of the gradients' churn their holes absorb.
# 0.5 chunk + 0.4 x gradients puts all of them within -10%..+25% (the default's own runs: 0.93-0.97x).
HEAP_SLACK_CHUNKED = 0.5
HEAP_SLACK_GRADIENTS = 0.4


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
    chunk_logits: int = 0   # one chunk's fp32 logits when the loss is chunked (lmtune.eval.lm_head); 0: plain loss

    def logits(self, batch: int) -> tuple[int, int]:
        """(bytes of one logits-sized buffer, how many the step holds beside the activations) at `batch`."""
        whole = self.logits_per_sample * batch
        if self.chunk_logits:
            return min(self.chunk_logits, whole), CHUNKED_LOGITS_BUFFERS
        return whole, LOGITS_BUFFERS

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
    heap: int = 0  # the tuned heap's holes beyond the logits' blocks (HEAP_SLACK_GRADIENTS)

    @property
    def total(self) -> int:
        return self.base + self.gradients + self.optimizer + self.activations + self.logits + self.heap

    def parts(self) -> str:
        heap = f" + {gb(self.heap)} heap slack" if self.heap else ""
        return (f"{gb(self.base)} process + {gb(self.gradients)} gradients + {gb(self.optimizer)} AdamW + "
                f"{gb(self.activations)} activations + {gb(self.logits)} logits{heap}")


def estimate(profile: Profile, batch: int, base: int, trainable_bytes: int, checkpointing: bool,
             heap_slack: bool = False) -> Estimate:
    """Peak bytes of a training step at micro-batch `batch` (see the module docstring for each term).
    heap_slack: the process runs with lmtune.allocator's glibc tuning (CPU)."""
    from lmtune.allocator import MMAP_THRESHOLD

    size, buffers = profile.logits(batch)
    heap = 0
    if heap_slack and size < MMAP_THRESHOLD:
        if profile.chunk_logits:
            buffers += HEAP_SLACK_CHUNKED
            heap = int(HEAP_SLACK_GRADIENTS * trainable_bytes)
        else:
            buffers += HEAP_SLACK_LOGITS
    return Estimate(
        batch=batch, block=profile.block, base=base,
        gradients=trainable_bytes,
        optimizer=ADAMW_STATES * trainable_bytes,
        activations=profile.activations(batch, checkpointing),
        logits=int(buffers * size),
        heap=heap,
    )


# ---- Fake-tensor profile of the model ------------------------------------------------------------

def _checkpointable_layers(model) -> list:
    """The layers gradient checkpointing wraps (transformers' GradientCheckpointingLayer)."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]


# long: the hooks below share this function's per-trace state (seen, in_layer, current) over one fake forward
# pass; split apart they would need a class holding the same state.
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


def profile(model, example: dict, collate, device: str = "cpu", autocast_dtype=None,
            loss_chunk_rows: int | None = None) -> Profile:
    """The model's activation line, from fake passes at micro-batch 1 and 2 of `example` (one dataset row).
    loss_chunk_rows: the Trainer's loss runs that many positions at a time (lmtune.eval.lm_head.chunk_rows);
    None: the model's own loss over the whole logits."""
    def batch(n):
        b = collate([example] * n)
        return {k: v for k, v in b.items() if k != "labels"} if loss_chunk_rows else b

    one = batch(1)
    block = int(one["input_ids"].shape[-1])
    s1, c1, logits = saved_bytes(model, one, device, autocast_dtype)
    s2, c2, _ = saved_bytes(model, batch(2), device, autocast_dtype)
    # The loss works on fp32 logits whatever the model's dtype: 4 bytes each.
    chunk = 4 * (logits // block) * loss_chunk_rows if loss_chunk_rows else 0
    return Profile(block=block, fixed=2 * s1 - s2, per_sample=s2 - s1, fixed_checkpointed=2 * c1 - c2,
                   per_sample_checkpointed=c2 - c1, logits_per_sample=4 * logits, chunk_logits=chunk)


def trainable_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
