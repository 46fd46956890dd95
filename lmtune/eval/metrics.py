"""Evaluation numbers for causal LMs and classifiers, computed through the repo's own metric modules.

The modules live in `lmtune/eval/metric_modules/<name>/<name>.py` and are loaded by path, so nothing is
fetched from the Hugging Face hub (the default pipeline runs with HF_HUB_OFFLINE=1).
"""

import contextlib
import functools
import math
import sys
from pathlib import Path

import evaluate
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader

MODULES_DIR = Path(__file__).resolve().parent / "metric_modules"
IGNORE_INDEX = -100  # label value skipped by the loss, as in transformers / torch cross_entropy

# Padding value per key when items differ in length; anything else is padded with pad_token_id.
_PAD_VALUES = {"labels": IGNORE_INDEX, "attention_mask": 0}


@functools.lru_cache(maxsize=None)
def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load `lmtune/eval/metric_modules/<name>` by path (cached: one shared instance per name).

    The instance is stateful (add_batch buffers until compute), so callers must not interleave two
    add_batch/compute cycles on the same name.
    """
    path = MODULES_DIR / name
    # Check first: a name that is not a local module must not fall through to a hub download.
    if not (path / f"{name}.py").is_file():
        available = sorted(p.name for p in MODULES_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"unknown metric module {name!r}; available: {available}")
    # keep_in_memory: the per-batch rows are tiny; avoids arrow cache files and file locks on disk.
    return evaluate.load(str(path), keep_in_memory=True)


def pad_collate(items, pad_token_id: int = 0) -> dict:
    """Stack a list of dicts of equal-length sequences / scalars; right-pad sequences that differ.

    If input_ids had to be padded and there is no attention_mask, one is added so that the padding
    is neither attended to nor scored (labels defaulting to input_ids are masked with it).
    """
    batch = {}
    for key in items[0]:
        values = [torch.as_tensor(item[key]) for item in items]
        if values[0].dim() == 0:
            batch[key] = torch.stack(values)
        else:  # pad_sequence == stack when lengths are equal
            batch[key] = pad_sequence(values, batch_first=True, padding_value=_PAD_VALUES.get(key, pad_token_id))
    if "input_ids" in batch and "attention_mask" not in batch:
        lengths = [len(item["input_ids"]) for item in items]
        if len(set(lengths)) > 1:
            batch["attention_mask"] = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return batch


# Rows of logits handled at a time on CPU: 6 MiB = 32 rows of SmolLM2's 49,152-token vocabulary in
# float32, small enough to stay in this machine's cache between the loss and the accuracy passes.
# Measured on an 8 x 256 x 50,257 batch here: 46 ms against 61 ms for the same work on all rows at
# once, and 46 ms for the loss alone in one F.cross_entropy call.
_CPU_CHUNK_BYTES = 6 << 20


def causal_lm_batch_stats(logits: torch.Tensor, labels: torch.Tensor, per_block: torch.Tensor | None = None
                          ) -> tuple[float, int, int]:
    """(summed next-token NLL, correct argmax predictions, scored tokens) for one batch.

    logits: (batch, seq, vocab); labels: (batch, seq) aligned with the inputs, -100 = not scored.
    Position t predicts token t+1, so logits drop the last step and labels drop the first.
    per_block: a float64 (batch,) tensor that receives each row's summed NLL (for paired comparisons).
    """
    vocab = logits.size(-1)
    # Shift the labels, not the logits: slicing logits[..., :-1, :] and flattening copies the whole
    # (batch, seq, vocab) tensor (400 MB for SmolLM2 at batch 8 x 256); the last position gets label
    # -100 instead, as transformers' ForCausalLMLoss does.
    flat = logits.reshape(-1, vocab)
    rows = len(flat) if flat.is_cuda else max(1, _CPU_CHUNK_BYTES // (4 * vocab))
    return _rows_stats(lambda i: flat[i:i + rows], len(flat), rows, labels, logits.size(1), per_block, flat.device)


def causal_lm_hidden_stats(hidden: torch.Tensor, head, labels: torch.Tensor, per_block: torch.Tensor | None = None,
                           rows: int | None = None) -> tuple[float, int, int]:
    """causal_lm_batch_stats of the logits `head(hidden)`, computed `rows` positions at a time (lmtune.eval.lm_head):
    the whole batch's logits never exist. hidden: (batch, seq, hidden) final hidden states."""
    from lmtune.eval import lm_head

    flat = hidden.reshape(-1, hidden.size(-1))
    rows = rows or lm_head.chunk_rows(lm_head.head_vocab(head))
    return _rows_stats(lambda i: head(flat[i:i + rows]), len(flat), rows, labels, hidden.size(1), per_block, flat.device)


def _rows_stats(logit_rows, n_rows: int, rows: int, labels, seq: int, per_block, device) -> tuple[float, int, int]:
    """The sums of causal_lm_batch_stats over the flattened batch, `logit_rows(i)` giving rows i:i+rows' logits."""
    targets = F.pad(labels[..., 1:].long(), (0, 1), value=IGNORE_INDEX).reshape(-1).to(device)
    nll_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, n_rows, rows):
        # float32: bf16/fp16 log-softmax over a large vocabulary loses precision in the loss.
        x, y = logit_rows(i).float(), targets[i:i + rows]
        # Per-token NLL in float32, summed in float64: even a float32 sum of 30 ~ln(V) terms is off by
        # ~1e-6 relative. Sum, not mean: the metric weights batches by token count; ignored rows add 0.
        nll = F.cross_entropy(x, y, ignore_index=IGNORE_INDEX, reduction="none").double()
        nll_sum += nll.sum()
        if per_block is not None:  # row i of the flattened batch belongs to block i // seq
            per_block.index_add_(0, torch.arange(i, i + len(nll), device=nll.device) // seq, nll)
        # argmax == label, exactly (ties included): only rows whose target logit reaches the row max
        # can be correct; amax finds them in one vectorised pass (~4x faster than argmax on CPU), and
        # argmax runs on those few rows to settle ties as argmax would (first maximum wins).
        candidates = (x.gather(1, y.clamp(min=0)[:, None])[:, 0] == x.amax(-1)) & (y != IGNORE_INDEX)
        if candidates.any():
            n_correct += (x[candidates].argmax(-1) == y[candidates]).sum()
    return float(nll_sum), int(n_correct), int((targets != IGNORE_INDEX).sum())


def _loader(dataset, batch_size, collate_fn, pad_token_id):
    collate = collate_fn or functools.partial(pad_collate, pad_token_id=pad_token_id)
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)


def _progress(loader, desc: str | None):
    """A progress bar (batches done, ETA) on an interactive terminal; plain iteration in logs and tests."""
    if desc is None or not sys.stderr.isatty():
        return loader
    from tqdm.auto import tqdm

    return tqdm(loader, desc=desc, unit="batch", leave=False)


def _run_eval(model, loader, step, autocast=None, desc: str | None = None) -> None:
    """Call step(batch) for every batch with the model in eval/no_grad (batches moved to the model's
    device, the forward pass under `autocast()` when given), restoring its train mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), (autocast() if autocast else contextlib.nullcontext()):
            for batch in _progress(loader, desc):
                step({k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()})
    except BaseException:
        # A failure mid-loop leaves half an add_batch stream in the cached (shared) metric
        # instances; drop them so the next evaluation starts clean.
        load_metric.cache_clear()
        raise
    finally:
        model.train(was_training)


# long: a third of it is the docstring; `step` closes over this evaluation's accumulators (the metric modules
# and the per-block lists), which keeps one pass over the data in one place.
def evaluate_causal_lm(model, dataset, batch_size: int, *, collate_fn=None, pad_token_id: int = 0,
                       byte_lengths: torch.Tensor | None = None, autocast=None, desc: str | None = None,
                       chunked: bool = True) -> dict:
    """Token-weighted loss, perplexity and next-token accuracy of a causal LM over `dataset`.

    Items are dicts with input_ids and optionally labels / attention_mask. Without labels, the
    labels are input_ids with attention_mask==0 positions set to -100 (padding is not scored).
    The loss is computed here rather than via model(labels=...), whose per-batch mean would weight
    batches equally regardless of how many valid tokens they hold.
    Returns {"loss", "perplexity", "accuracy", "n_tokens"}; perplexity is None if exp(loss) overflows.
    With `byte_lengths` (UTF-8 bytes per token id, `token_byte_lengths`) it adds "n_bytes" and
    "bits_per_byte" (summed NLL / ln 2 / bytes of the scored tokens, comparable across tokenizers), and
    "blocks": per item (block) its summed NLL, scored tokens and their bytes, in dataset order.
    chunked: score the LM head a chunk of positions at a time (lmtune.eval.lm_head; models it knows), so the
    batch's logits never exist whole; the numbers equal the plain path's (tests/test_lm_head.py).
    """
    from lmtune.eval import lm_head

    head_parts = lm_head.parts(model) if chunked else None
    ppl_metric, acc_metric = load_metric("perplexity_from_nll"), load_metric("token_accuracy")
    blocks = {"nll": [], "n_tokens": [], "n_bytes": []}

    def step(batch):
        attention_mask = batch.get("attention_mask")
        labels = batch.get("labels")
        if labels is None:
            labels = batch["input_ids"]
            if attention_mask is not None:
                labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
        # Packed rows (lmtune.data.packing) carry position_ids and no attention mask: transformers then keeps
        # each example's attention to itself, but only without a KV cache (a cache turns its detection off).
        inputs = {"input_ids": batch["input_ids"], "attention_mask": attention_mask,
                  "position_ids": batch.get("position_ids"), "use_cache": False}
        per_block = torch.zeros(len(labels), dtype=torch.float64, device=batch["input_ids"].device)
        if head_parts is not None:
            backbone, head = head_parts
            hidden = lm_head.hidden_states(model, backbone, inputs)
            nll_sum, n_correct, n_tokens = causal_lm_hidden_stats(hidden, head, labels, per_block)
        else:
            nll_sum, n_correct, n_tokens = causal_lm_batch_stats(model(**inputs).logits, labels, per_block)
        ppl_metric.add_batch(nll_sum=[nll_sum], n_tokens=[n_tokens])
        acc_metric.add_batch(n_correct=[n_correct], n_tokens=[n_tokens])
        if byte_lengths is not None:
            targets = F.pad(labels[:, 1:].long(), (0, 1), value=IGNORE_INDEX).cpu()  # the tokens each row scores
            scored = targets != IGNORE_INDEX
            blocks["nll"] += per_block.tolist()
            blocks["n_tokens"] += scored.sum(1).tolist()
            blocks["n_bytes"] += (byte_lengths[targets.clamp(min=0)] * scored).sum(1).tolist()

    _run_eval(model, _loader(dataset, batch_size, collate_fn, pad_token_id), step, autocast, desc)
    ppl, acc = ppl_metric.compute(), acc_metric.compute()
    out = {"loss": ppl["loss"], "perplexity": ppl["perplexity"], "accuracy": acc["accuracy"], "n_tokens": ppl["n_tokens"]}
    if byte_lengths is not None:
        out["n_bytes"] = int(sum(blocks["n_bytes"]))
        # bits per byte = summed NLL (nats) / ln 2 / UTF-8 bytes, as lm-evaluation-harness reports it;
        # fsum keeps the total independent of batching, like the perplexity module's.
        out["bits_per_byte"] = math.fsum(blocks["nll"]) / math.log(2) / out["n_bytes"] if out["n_bytes"] else None
        out["blocks"] = blocks
    return out


def evaluate_classifier(
    model, dataset, batch_size: int, num_labels: int, *, collate_fn=None, pad_token_id: int = 0, autocast=None,
    desc: str | None = None,
) -> dict:
    """Accuracy, macro-F1, class counts and confusion matrix of a sequence classifier.

    Items are dicts with input_ids, attention_mask and an integer `label`; the prediction is the
    argmax of model(...).logits. Returns the `classification` metric module's output, plus "blocks":
    each example's label and prediction in dataset order (for paired comparisons).
    """
    metric = load_metric("classification")
    blocks = {"label": [], "pred": []}

    def step(batch):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        preds, refs = logits.argmax(-1).tolist(), batch["label"].tolist()
        metric.add_batch(predictions=preds, references=refs)
        blocks["label"] += refs
        blocks["pred"] += preds

    _run_eval(model, _loader(dataset, batch_size, collate_fn, pad_token_id), step, autocast, desc)
    return {**metric.compute(num_labels=num_labels), "blocks": blocks}


def token_byte_lengths(tokenizer) -> torch.Tensor:
    """UTF-8 bytes of each token id's text (special tokens count 0: they are not text).

    Byte-level BPE (GPT-2, SmolLM2, Llama 3) maps every byte to one printable character, so a token's
    bytes are exact and add up to the text's bytes. Other tokenizers: the bytes of the token decoded
    alone (a token holding part of a multi-byte character is then approximate).
    """
    from lmtune.models.gpt2_bpe import bytes_to_unicode

    vocab = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    byte_level = "ByteLevel" in type(getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)).__name__
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab)))
    char_bytes = {c: 1 for c in bytes_to_unicode().values()}  # each stands for exactly one byte
    out = torch.zeros(vocab, dtype=torch.long)
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            continue
        if byte_level and all(c in char_bytes for c in piece):
            out[i] = len(piece)
        else:
            out[i] = len(tokenizer.decode([i], clean_up_tokenization_spaces=False).encode("utf-8"))
    return out


def evaluate_language_model(model, dataset, batch_size: int, *, tokenizer=None, autocast=None,
                            desc: str | None = None) -> dict:
    """evaluate_causal_lm with bits per byte when the tokenizer is given (its tokens' UTF-8 lengths)."""
    byte_lengths = token_byte_lengths(tokenizer) if tokenizer is not None else None
    return evaluate_causal_lm(model, dataset, batch_size, byte_lengths=byte_lengths, autocast=autocast, desc=desc)
