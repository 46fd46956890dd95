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

from lmtune.metrics import causal_lm_batch_stats, evaluate_causal_lm, load_metric  # noqa: E402


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


def test_accuracy_is_exact_when_most_rows_are_correct():
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

    from lmtune import metrics
    from lmtune.gpt2_bpe import build_gpt2_tokenizer

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
