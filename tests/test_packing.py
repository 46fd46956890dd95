"""Packing that keeps examples apart (lmtune.data.packing): whole examples per row, positions restarting at
each, and attention that never crosses an example, checked against the same examples run one by one."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmtune.data import packing
from lmtune.eval import metrics
from lmtune.train.trainer import collate_blocks

BLOCK = 48


def tiny_model(kind: str, attn: str):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=101,
                                           attn_implementation=attn))
    else:  # SmolLM2's architecture (rotary positions, grouped-query attention)
        model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             hidden_size=32, intermediate_size=64, vocab_size=101,
                                             max_position_embeddings=64, attn_implementation=attn))
    return model.eval()


def examples(seed=0, n=7):
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1, 100, size=int(rng.integers(5, 20))) for _ in range(n)]
    # an SFT example: the first third is prompt (-100), the rest is scored
    labels = [packing.labelled(x, np.arange(len(x)) >= len(x) // 3) for x in ids]
    return ids, labels


def example_nll(logits, labels):
    """Summed next-token NLL of one sequence's scored tokens."""
    return F.cross_entropy(logits[:-1].float(), torch.as_tensor(labels[1:]).long(), ignore_index=-100,
                           reduction="sum").item()


def packed_nll(model, rows, use_positions=True):
    """Per example (in packing order) the summed NLL read off the packed rows."""
    batch = collate_blocks([{k: v[r] for k, v in rows.items()} for r in range(len(rows["input_ids"]))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"],
                       position_ids=batch["position_ids"] if use_positions else None, use_cache=False).logits
    out = []
    for r in range(len(logits)):
        starts = [*np.flatnonzero(rows["position_ids"][r] == 0), BLOCK]
        for a, b in zip(starts, starts[1:]):
            if (rows["labels"][r, a:b] != -100).any():  # the unscored pad tail is no example
                out.append(example_nll(logits[r, a:b], rows["labels"][r, a:b]))
    return out


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_losses_equal_one_by_one(kind, attn):
    model = tiny_model(kind, attn)
    ids, labels = examples()
    rows = packing.pack_labelled(ids, labels, BLOCK, pad_id=0)
    assert len(rows["input_ids"]) < len(ids)  # several examples per row
    with torch.no_grad():
        alone = [example_nll(model(input_ids=torch.as_tensor(x)[None].long()).logits[0], l) for x, l in zip(ids, labels)]
    np.testing.assert_allclose(packed_nll(model, rows), alone, rtol=0, atol=1e-5)
    # control: the same rows under plain causal attention (positions 0..BLOCK-1 across the row) are not the same
    control = packed_nll(model, rows, use_positions=False)
    assert max(abs(a - b) for a, b in zip(control, alone)) > 1e-3


def test_evaluation_scores_packed_rows_like_examples_one_by_one():
    model = tiny_model("llama", "sdpa")
    ids, labels = examples(seed=1)
    rows = packing.pack_labelled(ids, labels, BLOCK, pad_id=0)
    padded = packing.pad_labelled(ids, labels, BLOCK, pad_id=0)
    as_items = lambda t: [{k: torch.as_tensor(v[i].astype(np.int64)) for k, v in t.items()} for i in range(len(t["input_ids"]))]  # noqa: E731
    packed_m = metrics.evaluate_causal_lm(model, as_items(rows), batch_size=4)
    padded_m = metrics.evaluate_causal_lm(model, as_items(padded), batch_size=4)
    assert packed_m["n_tokens"] == padded_m["n_tokens"] == sum(int((l[1:] != -100).sum()) for l in labels)
    assert packed_m["loss"] == pytest.approx(padded_m["loss"], abs=1e-5)


def test_layout_keeps_examples_whole():
    lengths = [10, 30, 9, 40, 48, 60, 3, 3]
    layout = packing.pack_layout(lengths, BLOCK)
    assert sorted(i for row in layout for i in row) == list(range(len(lengths)))  # each example once, in order
    assert [i for row in layout for i in row] == list(range(len(lengths)))
    for row in layout:
        assert sum(min(lengths[i], BLOCK) for i in row) <= BLOCK
        assert len(row) == 1 or all(lengths[i] <= BLOCK for i in row)  # an over-long example is alone
    # next-fit: a row closes only when the next example does not fit in it
    for row, nxt in zip(layout, layout[1:]):
        assert sum(min(lengths[i], BLOCK) for i in row) + min(lengths[nxt[0]], BLOCK) > BLOCK
    assert layout == [[0, 1], [2], [3], [4], [5], [6, 7]]


def test_pack_rows_positions_and_labels():
    ids = [np.arange(1, 6), np.arange(10, 13), np.arange(20, 80)]
    labels = [packing.labelled(x, np.arange(len(x)) >= 2) for x in ids]
    rows = packing.pack_labelled(ids, labels, 16, pad_id=0)
    np.testing.assert_array_equal(rows["position_ids"][0], [0, 1, 2, 3, 4, 0, 1, 2, *range(8)])
    np.testing.assert_array_equal(rows["input_ids"][0, :8], [1, 2, 3, 4, 5, 10, 11, 12])
    np.testing.assert_array_equal(rows["labels"][0, :8], [-100, -100, 3, 4, 5, -100, -100, 12])
    assert (rows["labels"][0, 8:] == -100).all() and (rows["input_ids"][0, 8:] == 0).all()
    np.testing.assert_array_equal(rows["input_ids"][1], np.arange(20, 36))  # truncated to the row, alone
    np.testing.assert_array_equal(rows["position_ids"][1], np.arange(16))
