import json
import math
import os
import socket

# huggingface_hub / evaluate read this at import time, so it must be set before they are imported.
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from lmtune.eval.metrics import causal_lm_batch_stats, evaluate_causal_lm, load_metric  # noqa: E402


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails, so loading is proven offline even on a networked box."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _ppl_of(batches):
    metric = load_metric("perplexity_from_nll")
    for nll_sum, n_tokens in batches:
        metric.add_batch(nll_sum=[nll_sum], n_tokens=[n_tokens])
    return metric.compute()


@pytest.mark.parametrize("name", ["perplexity_from_nll", "token_accuracy", "classification"])
def test_modules_load_by_path_offline(no_network, name):
    load_metric.cache_clear()
    assert load_metric(name).name == name
    assert load_metric(name) is load_metric(name)  # cached


def test_unknown_module_is_not_looked_up_on_the_hub(no_network):
    with pytest.raises(ValueError, match="unknown metric module"):
        load_metric("accuracy")


def test_uniform_logits_perplexity_equals_vocab_size():
    vocab = 37
    labels = torch.randint(0, vocab, (3, 11))
    stats = causal_lm_batch_stats(torch.zeros(3, 11, vocab), labels)
    assert stats[2] == 3 * 10
    result = _ppl_of([(stats[0], stats[2])])
    assert result["loss"] == pytest.approx(math.log(vocab), abs=1e-6)
    assert result["perplexity"] == pytest.approx(vocab, abs=1e-5)


def test_shift_on_hand_made_example():
    # labels [0, 1, 2]: position 0 predicts 1, position 1 predicts 2, position 2 predicts nothing.
    labels = torch.tensor([[0, 1, 2]])
    logits = torch.tensor(
        [
            [
                [0.0, math.log(3), 0.0],  # p(1) = 3/5 -> correct, nll = ln(5/3)
                [math.log(4), 0.0, 0.0],  # p(2) = 1/6 -> argmax 0 is wrong, nll = ln 6
                [100.0, 0.0, 0.0],  # last step has no target; would dominate if not dropped
            ]
        ]
    )
    nll_sum, n_correct, n_tokens = causal_lm_batch_stats(logits, labels)
    assert (n_correct, n_tokens) == (1, 2)
    assert nll_sum == pytest.approx(math.log(10), abs=1e-6)  # ln(5/3) + ln 6


def test_ignore_index_is_not_scored():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 6, 9), torch.randint(0, 9, (2, 6))
    masked = labels.clone()
    masked[0, 2:4] = -100
    masked[1, 5] = -100
    masked[1, 0] = -100  # position 0 is never a target anyway
    nll_sum, n_correct, n_tokens = causal_lm_batch_stats(logits, masked)
    keep = masked[:, 1:] != -100
    target_logits, targets = logits[:, :-1][keep], labels[:, 1:][keep]
    assert n_tokens == 2 * 5 - 3
    assert nll_sum == pytest.approx(F.cross_entropy(target_logits, targets, reduction="sum").item(), rel=1e-6)
    assert n_correct == int((target_logits.argmax(-1) == targets).sum())


def test_loss_is_token_weighted_across_batches():
    torch.manual_seed(1)
    vocab = 13
    batch_a = (torch.randn(1, 5, vocab), torch.randint(0, vocab, (1, 5)))  # 4 scored tokens
    batch_b = (torch.randn(2, 9, vocab) * 3, torch.randint(0, vocab, (2, 9)))  # 16 scored tokens
    stats = [causal_lm_batch_stats(*b) for b in (batch_a, batch_b)]
    result = _ppl_of([(s[0], s[2]) for s in stats])

    token_nll = torch.cat([F.cross_entropy(lg[:, :-1].reshape(-1, vocab), lb[:, 1:].reshape(-1), reduction="none")
                           for lg, lb in (batch_a, batch_b)])
    assert result["n_tokens"] == 20
    assert result["loss"] == pytest.approx(token_nll.mean().item(), rel=1e-6)
    mean_of_means = np.mean([s[0] / s[2] for s in stats])
    assert abs(result["loss"] - mean_of_means) > 1e-3  # the example actually discriminates


def test_perplexity_overflow_is_reported_as_null():
    result = _ppl_of([(1e6, 10)])  # mean NLL 1e5 nats: exp overflows float64
    assert result["loss"] == 1e5 and result["perplexity"] is None
    json.dumps(result, allow_nan=False)  # still strict JSON
    assert math.isfinite(_ppl_of([(7000.0, 10)])["perplexity"])  # 700 nats is representable


def test_zero_tokens_raise():
    with pytest.raises(ValueError, match="no scored tokens"):
        _ppl_of([(0.0, 0)])


def test_token_accuracy_pools_counts():
    metric = load_metric("token_accuracy")
    metric.add_batch(n_correct=[3], n_tokens=[4])
    metric.add_batch(n_correct=[1], n_tokens=[6])
    assert metric.compute() == {"accuracy": 0.4, "n_tokens": 10}  # not mean(0.75, 0.1667)


def test_classification_matches_sklearn_with_absent_classes():
    refs = [0, 1, 2, 2, 1, 0, 2, 1]
    preds = [0, 2, 2, 0, 1, 0, 1, 1]  # class 3 in neither, class 2 under-predicted
    metric = load_metric("classification")
    metric.add_batch(predictions=preds[:5], references=refs[:5])
    metric.add_batch(predictions=preds[5:], references=refs[5:])
    result = metric.compute(num_labels=4)

    labels = list(range(4))
    assert result["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    assert result["macro_f1"] == pytest.approx(
        f1_score(refs, preds, labels=labels, average="macro", zero_division=0)
    )
    assert result["confusion_matrix"] == confusion_matrix(refs, preds, labels=labels).tolist()
    assert result["support"] == [2, 3, 3, 0]
    assert result["predicted_counts"] == [3, 3, 2, 0]
    json.dumps(result, allow_nan=False)

    missing_pred = metric.compute(predictions=[0, 0, 1], references=[0, 2, 1], num_labels=3)
    assert missing_pred["macro_f1"] == pytest.approx(
        f1_score([0, 2, 1], [0, 0, 1], labels=[0, 1, 2], average="macro", zero_division=0)
    )


def test_classification_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="outside"):
        load_metric("classification").compute(predictions=[0, 3], references=[0, 1], num_labels=3)


def _tiny_gpt2():
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=100, n_positions=64)
    return GPT2LMHeadModel(config).eval()


def test_evaluate_causal_lm_matches_model_loss_on_equal_batches():
    model = _tiny_gpt2()
    data = [{"input_ids": torch.randint(0, 100, (16,))} for _ in range(6)]
    model.train()  # must be switched to eval inside, and restored afterwards
    result = evaluate_causal_lm(model, data, batch_size=2)
    assert model.training

    model.eval()
    losses, correct = [], 0
    with torch.no_grad():
        for i in range(0, 6, 2):
            ids = torch.stack([d["input_ids"] for d in data[i : i + 2]])
            out = model(input_ids=ids, labels=ids)
            losses.append(out.loss.item())
            correct += int((out.logits[:, :-1].argmax(-1) == ids[:, 1:]).sum())
    reference = float(np.mean(losses))  # equal token counts per batch: mean of means is exact
    assert result["n_tokens"] == 6 * 15
    assert result["loss"] == pytest.approx(reference, abs=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(reference), rel=1e-5)
    assert result["accuracy"] == pytest.approx(correct / 90)


def test_evaluate_causal_lm_pads_unequal_lengths_and_weights_by_tokens():
    model = _tiny_gpt2()
    lengths = [5, 12, 3, 9, 16]
    data = [{"input_ids": torch.randint(0, 100, (n,)).tolist()} for n in lengths]
    result = evaluate_causal_lm(model, data, batch_size=2, pad_token_id=99)

    with torch.no_grad():  # per-sequence, unpadded reference
        nll = sum(model(input_ids=torch.tensor([d["input_ids"]]), labels=torch.tensor([d["input_ids"]])).loss.item()
                  * (len(d["input_ids"]) - 1) for d in data)
    n_tokens = sum(n - 1 for n in lengths)
    assert result["n_tokens"] == n_tokens
    assert result["loss"] == pytest.approx(nll / n_tokens, abs=1e-5)


def test_failed_run_does_not_leak_batches_into_the_next():
    model = _tiny_gpt2()
    data = [{"input_ids": torch.randint(0, 100, (8,))} for _ in range(4)]
    expected = evaluate_causal_lm(model, data, batch_size=2)

    calls = {"n": 0}
    forward = model.forward

    def failing_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return forward(*args, **kwargs)

    model.forward = failing_forward
    with pytest.raises(RuntimeError, match="boom"):
        evaluate_causal_lm(model, data, batch_size=2)  # first batch already added to the metric
    model.forward = forward
    assert evaluate_causal_lm(model, data, batch_size=2) == expected


def test_accuracy_matches_argmax_including_ties():
    torch.manual_seed(2)
    logits = torch.randn(3, 8, 6)
    logits[0, 1] = 0.0  # a full tie: argmax picks index 0
    logits[1, 2, :2] = 5.0  # a tie between ids 0 and 1 at the max
    labels = torch.randint(0, 6, (3, 8))
    labels[0, 2], labels[0, 3] = 0, 3  # position 1 predicts label[2]
    labels[1, 3] = 1  # tied with id 0, which argmax prefers: not correct
    labels[2, 4] = -100
    _, n_correct, _ = causal_lm_batch_stats(logits, labels)
    keep = labels[:, 1:] != -100
    assert n_correct == int((logits[:, :-1].argmax(-1) == labels[:, 1:])[keep].sum())


@pytest.mark.parametrize("chunk_rows", [None, 3])  # None: one CPU chunk; 3: correct rows in every chunk
def test_accuracy_is_exact_when_most_rows_are_correct(chunk_rows, monkeypatch):
    from lmtune.eval import metrics

    if chunk_rows:
        monkeypatch.setattr(metrics, "_CPU_CHUNK_BYTES", chunk_rows * 4 * 7)
    torch.manual_seed(3)
    logits = torch.randn(2, 9, 7)
    labels = torch.cat([torch.zeros(2, 1, dtype=torch.long), logits[:, :-1].argmax(-1)], dim=1)  # all correct
    labels[0, 3] = (labels[0, 3] + 1) % 7  # one wrong
    logits[1, 4] = 0.0  # a full tie at position 4: argmax says id 0
    labels[1, 5] = 2
    _, n_correct, n_tokens = causal_lm_batch_stats(logits, labels)
    assert n_correct == int((logits[:, :-1].argmax(-1) == labels[:, 1:]).sum())
    assert n_tokens == 16


def test_bits_per_byte_on_a_fixed_text_equals_the_hand_computation():
    """Summed next-token NLL (nats) / ln 2 / UTF-8 bytes of the scored tokens, computed here by hand with
    the model's own logits and the decoded text (multi-byte characters included)."""
    import math
    import tempfile
    from pathlib import Path

    import transformers

    from lmtune.eval import metrics
    from lmtune.models.gpt2_bpe import build_gpt2_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok = build_gpt2_tokenizer(Path(tmp))
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(tok), n_layer=1, n_embd=16, n_head=2, n_positions=64)).eval()
    text = "Naïve café — 日本語: the Union is strong."
    ids = tok(text)["input_ids"]
    out = metrics.evaluate_causal_lm(model, [{"input_ids": torch.tensor(ids)}], 1,
                                     byte_lengths=metrics.token_byte_lengths(tok))
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
    nll = -sum(logp[t, ids[t + 1]].item() for t in range(len(ids) - 1))
    n_bytes = len(tok.decode(ids[1:]).encode("utf-8"))  # position 0 is never a target
    assert out["n_bytes"] == n_bytes == len(text.encode("utf-8")) - len(tok.decode(ids[:1]).encode("utf-8"))
    assert out["bits_per_byte"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-6)
    assert out["blocks"]["n_tokens"] == [len(ids) - 1] and out["blocks"]["n_bytes"] == [n_bytes]


# --- Per-block rows, pass-through arguments and helpers (holes found by `make mutation`, tests/MUTATION.md) ---

def _reference_blocks(model, data, byte_lengths):
    """Each item alone (batch 1, one full-vocabulary log-softmax in float64): its summed NLL, scored tokens,
    their bytes and correct argmax predictions. Independent of batching, padding and the CPU row chunks."""
    rows = []
    with torch.no_grad():
        for d in data:
            ids = torch.as_tensor(d["input_ids"])[None]
            labels = torch.as_tensor(d.get("labels", d["input_ids"]))[None]
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
            target = labels[0, 1:]
            keep = target != -100
            nll = -logp[keep.nonzero()[:, 0], target[keep]]
            rows.append((math.fsum(nll.tolist()), int(keep.sum()), int(byte_lengths[target[keep]].sum()),
                         int((logp.argmax(-1)[keep] == target[keep]).sum())))
    return rows


@pytest.mark.parametrize("chunked", [True, False])  # the LM head a chunk at a time, or the model's whole logits
def test_blocks_are_exact_per_item_across_batches_and_row_chunks(monkeypatch, chunked):
    """Unequal lengths, masked labels (instruction-style) and a scored token id 0, in batches of 2 whose
    logits are cut into CPU chunks of 5 rows (not a multiple of the sequence length): every item's row, the
    totals and the accuracy equal the item-by-item reference."""
    from lmtune.eval import metrics

    model = _tiny_gpt2()
    torch.manual_seed(4)
    data = []
    for n in (7, 12, 5, 9, 11):
        ids = torch.randint(0, 100, (n,))
        ids[2] = 0  # a scored target with id 0: its bytes are byte_lengths[0]
        labels = ids.clone()
        labels[: n // 3] = -100  # a prompt: not scored
        data.append({"input_ids": ids.tolist(), "labels": labels.tolist()})
    byte_lengths = torch.randint(1, 5, (100,))
    byte_lengths[0] = 9  # unlike every other id, so a wrong index shows
    monkeypatch.setattr(metrics, "_CPU_CHUNK_BYTES", 5 * 4 * 100)  # 5 rows of 100 float32 logits
    out = metrics.evaluate_causal_lm(model, data, 2, pad_token_id=99, byte_lengths=byte_lengths, chunked=chunked)

    ref = _reference_blocks(model, data, byte_lengths)
    blocks = out["blocks"]
    assert blocks["n_tokens"] == [r[1] for r in ref] and blocks["n_bytes"] == [r[2] for r in ref]
    assert blocks["nll"] == pytest.approx([r[0] for r in ref], rel=1e-6)
    assert out["n_tokens"] == sum(r[1] for r in ref) and out["n_bytes"] == sum(r[2] for r in ref)
    assert out["loss"] == pytest.approx(math.fsum(r[0] for r in ref) / out["n_tokens"], rel=1e-6)
    assert out["accuracy"] == sum(r[3] for r in ref) / out["n_tokens"]


def test_batch_nll_is_summed_in_float64():
    """The batch's NLL sum is float64: 4,000 per-token terms summed in float32 drift by ~1e-6 relative."""
    torch.manual_seed(5)
    logits, labels = torch.randn(4, 1001, 50), torch.randint(0, 50, (4, 1001))
    nll_sum, _, n_tokens = causal_lm_batch_stats(logits, labels)
    per_token = F.cross_entropy(logits[:, :-1].reshape(-1, 50), labels[:, 1:].reshape(-1), reduction="none")
    assert n_tokens == 4000
    assert nll_sum == pytest.approx(math.fsum(per_token.double().tolist()), rel=1e-12)


def test_bits_per_byte_is_null_when_no_scored_token_has_bytes():
    model = _tiny_gpt2()
    out = evaluate_causal_lm(model, [{"input_ids": [1, 2, 3]}], 1, byte_lengths=torch.zeros(100, dtype=torch.long))
    assert out["n_bytes"] == 0 and out["bits_per_byte"] is None


def test_arguments_reach_the_loader_the_forward_pass_and_the_progress_bar(monkeypatch):
    """batch_size, collate_fn, autocast and desc are used, for the LM and the classifier evaluation alike."""
    from lmtune.eval import metrics
    from transformers import GPT2ForSequenceClassification

    seen = {"sizes": [], "autocast": 0, "desc": []}

    def collate(items):
        seen["sizes"].append(len(items))
        return metrics.pad_collate(items, pad_token_id=0)

    class Autocast:
        def __enter__(self):
            seen["autocast"] += 1

        def __exit__(self, *exc):
            return False

    def progress(loader, desc):
        seen["desc"].append(desc)
        return loader

    monkeypatch.setattr(metrics, "_progress", progress)
    lm = _tiny_gpt2()
    data = [{"input_ids": list(range(1, 9)), "label": i % 2} for i in range(5)]
    metrics.evaluate_causal_lm(lm, [{"input_ids": d["input_ids"]} for d in data], 2, collate_fn=collate,
                               autocast=Autocast, desc="lm")
    torch.manual_seed(0)
    clf = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=100, n_positions=64,
                                                   num_labels=2, pad_token_id=0)).eval()
    metrics.evaluate_classifier(clf, data, 2, 2, collate_fn=collate, autocast=Autocast, desc="clf")
    assert seen == {"sizes": [2, 2, 1] * 2, "autocast": 2, "desc": ["lm", "clf"]}


def test_classifier_rows_are_each_example_alone_in_order_with_the_default_padding():
    """Unequal lengths padded with the default pad id 0, which is the model's pad id: every prediction
    equals the example run alone, in dataset order across batches."""
    from transformers import GPT2ForSequenceClassification

    from lmtune.eval.metrics import evaluate_classifier

    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=100, n_positions=64,
                                                     num_labels=3, pad_token_id=0)).eval()
    data = [{"input_ids": torch.randint(1, 100, (n,)).tolist(), "label": n % 3} for n in (4, 9, 6, 3, 8, 5, 7)]
    with torch.no_grad():
        alone = [int(model(input_ids=torch.tensor([d["input_ids"]])).logits.argmax(-1)) for d in data]
    assert len(set(alone)) > 1  # predictions that differ, so a misplaced row shows
    out = evaluate_classifier(model, data, 3, 3)
    assert out["blocks"] == {"label": [d["label"] for d in data], "pred": alone}


def test_pad_collate_pads_each_key_with_its_own_value_and_masks_only_when_lengths_differ():
    from lmtune.eval.metrics import pad_collate

    items = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7], "label": 1}, {"input_ids": [8], "labels": [8], "label": 0}]
    batch = pad_collate(items)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]  # the default pad id is 0
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]  # never scored
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["label"].tolist() == [1, 0]
    assert pad_collate(items, pad_token_id=7)["input_ids"].tolist() == [[5, 6, 7], [8, 7, 7]]
    assert "attention_mask" not in pad_collate([{"input_ids": [1, 2]}, {"input_ids": [3, 4]}])  # nothing padded
    given = [{"input_ids": [1, 2], "attention_mask": [0, 1]}, {"input_ids": [3], "attention_mask": [1]}]
    assert pad_collate(given)["attention_mask"].tolist() == [[0, 1], [1, 0]]  # a given mask is kept, padded with 0
    assert pad_collate([{"label": 1}, {"label": 2}])["label"].tolist() == [1, 2]  # no input_ids: no mask


def test_progress_bar_only_on_a_terminal_and_only_with_a_description(monkeypatch):
    from tqdm.auto import tqdm

    from lmtune.eval import metrics

    loader = [1, 2, 3]
    monkeypatch.setattr(metrics.sys.stderr, "isatty", lambda: False, raising=False)
    assert metrics._progress(loader, "eval") is loader
    monkeypatch.setattr(metrics.sys.stderr, "isatty", lambda: True, raising=False)
    assert metrics._progress(loader, None) is loader
    bar = metrics._progress(loader, "eval")
    try:
        assert isinstance(bar, tqdm) and (bar.desc, bar.unit, bar.leave) == ("eval", "batch", False)
        assert list(bar) == loader
    finally:
        bar.close()


class _WordTokenizer:
    """A tokenizer without a byte-level decoder (no backend_tokenizer at all): special id 0 first, then
    pieces whose text is not the piece itself."""
    all_special_ids = [0, 3]
    _pieces = ["<s>", "ab", "c", "</s>", "é", None]
    _text = {1: "xyz", 2: "c", 4: "é", 5: "q"}

    def __len__(self):
        return len(self._pieces)

    def convert_ids_to_tokens(self, ids):
        return [self._pieces[i] for i in ids]

    def decode(self, ids, clean_up_tokenization_spaces=False):
        return "".join(self._text[i] for i in ids)


def test_token_byte_lengths_without_a_byte_level_decoder_uses_each_token_decoded():
    from lmtune.eval.metrics import token_byte_lengths

    out = token_byte_lengths(_WordTokenizer())
    # special ids and ids without a piece count 0; the rest are the UTF-8 bytes of their decoded text
    assert out.dtype == torch.long and out.tolist() == [0, 3, 1, 0, 2, 0]


def test_token_byte_lengths_of_gpt2_bpe_count_pieces_and_zero_for_eos():
    import tempfile
    from pathlib import Path

    from lmtune.models.gpt2_bpe import build_gpt2_tokenizer
    from lmtune.eval.metrics import token_byte_lengths

    with tempfile.TemporaryDirectory() as tmp:
        tok = build_gpt2_tokenizer(Path(tmp))
    out = token_byte_lengths(tok)
    assert out.dtype == torch.long and out[tok.eos_token_id] == 0
    for text in ("!", " the", " café", "日本"):
        ids = tok(text)["input_ids"]
        assert int(out[ids].sum()) == len(text.encode("utf-8")), text


def test_per_block_nll_of_the_plain_path_across_cpu_chunks(monkeypatch):
    """Each row's summed next-token NLL lands in per_block[row], also when a CPU chunk of rows spans two blocks."""
    from lmtune.eval import metrics

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.randint(0, 7, (2, 5))
    labels[0, 2] = labels[1, 4] = -100
    expected = torch.zeros(2, dtype=torch.float64)
    for b in range(2):
        for t in range(4):
            if labels[b, t + 1] != -100:
                expected[b] += F.cross_entropy(logits[b, t], labels[b, t + 1]).double()
    for chunk_bytes in (4 * 7 * 3, metrics._CPU_CHUNK_BYTES):  # 3 rows a pass (blocks of 5 rows), then all at once
        monkeypatch.setattr(metrics, "_CPU_CHUNK_BYTES", chunk_bytes)
        per_block = torch.zeros(2, dtype=torch.float64)
        nll, _, n = causal_lm_batch_stats(logits, labels, per_block)
        assert per_block.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
        assert nll == pytest.approx(float(expected.sum()), rel=1e-6) and n == 6


def test_evaluate_language_model_passes_autocast_and_label(monkeypatch):
    from lmtune.eval import metrics

    calls = []
    monkeypatch.setattr(metrics, "evaluate_causal_lm", lambda *a, **k: calls.append((a, k)) or {"loss": 1.0})
    amp = object()
    assert metrics.evaluate_language_model("m", "d", 3, autocast=amp, desc="evaluate base") == {"loss": 1.0}
    assert calls == [(("m", "d", 3), {"byte_lengths": None, "autocast": amp, "desc": "evaluate base"})]


def test_the_default_loader_pads_with_the_given_id_in_order():
    from lmtune.eval import metrics

    data = [{"input_ids": [1, 2, 3]}, {"input_ids": [4]}, {"input_ids": [5, 6]}]
    batches = list(metrics._loader(data, 2, None, 7))
    assert [b["input_ids"].tolist() for b in batches] == [[[1, 2, 3], [4, 7, 7]], [[5, 6]]]
