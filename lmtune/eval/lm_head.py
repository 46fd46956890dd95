"""The LM head applied a chunk of positions at a time, so that the (tokens x vocabulary) logits never exist whole.

SmolLM2's vocabulary is 49,152: at 4 x 4,096 tokens its fp32 logits are 3.2 GB, their log-softmax and gradients
as much again each. Here the model runs with `logits_to_keep=1` (transformers computes the logits of the last
position only) while a forward hook on its backbone keeps the final hidden states, the LM head's input. The
loss then runs over chunks of CHUNK_BYTES of logits:

- training (`chunked_loss`): for a plain nn.Linear head (GPT-2, Llama and kin), per chunk the logits, the
  loss and the gradients with respect to the chunk's hidden states and the head's weight are computed in the
  forward pass and the logits dropped (Liger's scheme; backward only scales the kept gradients): the same three
  matmuls as the plain loss, one chunk's logits alive at a time. Any other head (a peft LoRA layer or
  modules_to_save wrapper on it) runs each chunk inside torch.utils.checkpoint, which recomputes the chunk's
  logits in the backward pass (one more head matmul per step);
- evaluation (`lmtune.eval.metrics.causal_lm_hidden_stats`): no gradients, so each chunk's logits are simply
  computed, scored and dropped.

Only for model types whose logits are exactly `lm_head(backbone(...).last_hidden_state)` (CHUNKABLE: no logit
soft-capping or scaling after the head; tests/test_lm_head.py checks each against the plain forward).
On CUDA with liger-kernel installed the Trainer uses Liger's fused linear cross-entropy instead (same idea in
one Triton kernel; lmtune.train.trainer.liger_available).
"""
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
# fp32 logits per chunk: 256 MiB = 1,365 rows of SmolLM2's vocabulary. Smaller chunks make the head's matmuls
# thin (the weight gradient's inner dimension is the chunk's rows): measured here with SmolLM2's head under bf16
# autocast at 4 x 1,024 tokens, 341-row chunks took 1.6x the plain loss's time, 1,024-row ones 0.8x. At 4 x 4,096
# tokens a step's logits term is then a few chunks (~1 GiB) instead of ~9 GiB.
CHUNK_BYTES = 256 << 20
# model_type values whose causal-LM forward is `lm_head(backbone(...).last_hidden_state)` and nothing more.
CHUNKABLE = frozenset({"gpt2", "llama", "mistral", "qwen2", "qwen3"})


def chunk_rows(vocab: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Positions per chunk: as many fp32 logit rows as fit in `chunk_bytes` (at least one)."""
    return max(1, chunk_bytes // (4 * vocab))


def _inner(model):
    """The transformers model inside DDP / torch.compile / peft wrappers (LoRA layers stay in place inside it)."""
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    return model


def parts(model):
    """(backbone, head) of a causal LM whose logits are exactly head(backbone output), or None."""
    inner = _inner(model)
    config = getattr(inner, "config", None)
    if getattr(config, "model_type", None) not in CHUNKABLE:
        return None
    backbone = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if backbone is None or head is None or backbone is inner:
        return None
    return backbone, head


def head_vocab(head) -> int:
    """The head's output width (a peft LoRA layer or modules_to_save wrapper around it reports the same)."""
    out = getattr(head, "out_features", None)
    return int(out if out is not None else head.weight.shape[0])


def hidden_states(model, backbone, inputs: dict) -> torch.Tensor:
    """The final hidden states (batch, seq, hidden) of `model(**inputs)`, run through the model's own forward
    (so DDP, peft and autocast see an ordinary call) with only the last position's logits computed."""
    kept = []

    def keep(module, args, output):
        kept.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = backbone.register_forward_hook(keep)
    try:
        model(**inputs, logits_to_keep=1)
    finally:
        handle.remove()
    return kept[-1]


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Flat next-token targets: position t is scored against label t+1, the last position not at all (-100),
    as transformers' ForCausalLMLoss shifts them."""
    return F.pad(labels[..., 1:].long(), (0, 1), value=IGNORE_INDEX).reshape(-1)


def _chunk_nll_sum(head, h, y):
    # fp32 log-softmax, as transformers' loss upcasts the logits (bf16 over 49,152 classes loses precision).
    return F.cross_entropy(head(h).float(), y, ignore_index=IGNORE_INDEX, reduction="sum")


class _LinearHeadNLL(torch.autograd.Function):
    """Summed NLL of `h @ weight.T` over row chunks, with the gradients computed chunk by chunk in the forward
    pass (Liger's scheme): per chunk, softmax - one-hot is the gradient of the summed NLL with respect to the
    logits, so d/dh = g @ W and d/dW += g.T @ h, and the chunk's logits are dropped. Three matmuls per chunk,
    as the plain loss needs, and no recomputation. Kept for backward: one hidden-sized and one weight-sized
    gradient, scaled there by the incoming gradient (1 / the token count)."""

    @staticmethod
    def forward(ctx, flat, weight, targets, rows):
        # Under autocast the matmuls run in its dtype, as the plain path's lm_head; the loss in fp32 (upcast).
        # The weight is cast once here, not by autocast at each of the 3 matmuls of every chunk (49,152 x 576).
        dtype = torch.get_autocast_dtype(flat.device.type) if torch.is_autocast_enabled(flat.device.type) else flat.dtype
        want_w = weight.requires_grad
        grad_h = torch.empty(flat.shape, dtype=flat.dtype, device=flat.device)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        total = torch.zeros((), dtype=torch.float32, device=flat.device)
        w = weight.to(dtype)
        with torch.autocast(flat.device.type, enabled=False):
            for i in range(0, len(flat), rows):
                h, y = flat[i:i + rows].to(dtype), targets[i:i + rows]
                logits = (h @ w.t()).float()
                scored = y != IGNORE_INDEX
                y0 = y.clamp(min=0)[:, None]
                lse = torch.logsumexp(logits, -1)
                total += ((lse - logits.gather(1, y0)[:, 0]) * scored).sum()
                g = logits.sub_(lse[:, None]).exp_()             # softmax, in place of the logits
                g.scatter_add_(1, y0, -scored[:, None].float())  # minus the one-hot of scored targets
                g = g.mul_(scored[:, None]).to(dtype)            # unscored rows: no gradient
                grad_h[i:i + rows] = g @ w
                if want_w:
                    grad_w += (g.t() @ h).float()
        ctx.save_for_backward(grad_h, grad_w if want_w else torch.empty(0))
        ctx.want_w, ctx.w_dtype = want_w, weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, (grad_w * grad_out).to(ctx.w_dtype) if ctx.want_w else None, None, None


def chunked_loss(hidden: torch.Tensor, head, labels: torch.Tensor, num_items_in_batch=None,
                 rows: int | None = None) -> torch.Tensor:
    """transformers' causal-LM loss of `head(hidden)` against `labels`, a chunk of `rows` positions at a time.

    As ForCausalLMLoss: labels shifted (shifted_targets), -100 not scored, summed and divided by
    `num_items_in_batch` when given (the Trainer's count over the whole accumulated batch), else the mean over
    the scored tokens.
    """
    targets = shifted_targets(labels).to(hidden.device)
    flat = hidden.reshape(-1, hidden.size(-1))
    rows = rows or chunk_rows(head_vocab(head))
    if type(head) is torch.nn.Linear and head.bias is None:  # GPT-2's and Llama's heads: gradients in the forward pass
        total = _LinearHeadNLL.apply(flat, head.weight, targets, rows)
    else:  # any other module (a peft LoRA layer or modules_to_save wrapper): recompute each chunk in backward
        # split: one backward node assembles the chunks' gradients into the hidden states' gradient at once.
        total = sum(checkpoint(_chunk_nll_sum, head, h, y, use_reentrant=False, preserve_rng_state=False)
                    for h, y in zip(flat.split(rows), targets.split(rows)))
    if num_items_in_batch is None:
        return total / (targets != IGNORE_INDEX).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
