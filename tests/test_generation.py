"""lmtune.eval.generation on the placement lmtune.device chooses: the model and its inputs go to the placement's
device, forward passes run under its autocast, and generation uses the KV cache (one new token per step
after the prompt) even when the saved config says `use_cache: false`, as training leaves it."""
import pytest
import torch
import transformers

from lmtune import params
from lmtune.eval import generation
from lmtune.device import Placement
from task_helpers import tok  # noqa: F401 (fixture)
from conftest import ROOT


@pytest.fixture
def tiny_lm():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, n_positions=64, n_embd=16, n_layer=1, n_head=2,
                                     use_cache=False)  # as training saves it
    return transformers.GPT2LMHeadModel(config)


def spy(model, monkeypatch, seen):
    """Record where each forward pass runs: its input device, autocast state and how many tokens it gets."""
    forward, to = model.forward, model.to

    def recording_forward(*args, **kw):
        ids = kw.get("input_ids", args[0] if args else None)
        seen["forward"].append({"device": ids.device.type, "tokens": ids.shape[1],
                                "autocast": torch.is_autocast_enabled("cpu"),
                                "dtype": torch.get_autocast_dtype("cpu")})
        return forward(*args, **kw)

    def recording_to(*args, **kw):
        seen["to"].append(args[0] if args else kw.get("device"))
        return to(*args, **kw)

    monkeypatch.setattr(model, "forward", recording_forward)
    monkeypatch.setattr(model, "to", recording_to)


def test_samples_run_on_the_injected_placement_with_kv_cache(tiny_lm, tok, monkeypatch):
    placement = Placement("cpu", torch.bfloat16)  # CPU autocast in bf16 stands in for a GPU's
    seen = {"forward": [], "to": []}
    spy(tiny_lm, monkeypatch, seen)
    moved = []
    to = transformers.BatchEncoding.to
    monkeypatch.setattr(transformers.BatchEncoding, "to", lambda self, d, **kw: moved.append(d) or to(self, d, **kw))

    model = generation.place(tiny_lm, placement)
    gp = params.load(ROOT / "params.yaml").generate.model_copy(update={"prompts": ["The Union is"], "max_new_tokens": 5})
    out = generation.samples(model, tok, gp, placement)

    assert seen["to"] == ["cpu"] and model.config.use_cache is True and not model.training
    assert moved == ["cpu"] * 4  # each strategy's inputs went to the placement's device
    assert len(out) == 4 and all(s["settings"]["seed"] == gp.seed for s in out)
    prompt_len = len(tok("The Union is")["input_ids"])
    per_strategy = [seen["forward"][i:i + 5] for i in range(0, len(seen["forward"]), 5)]
    assert len(per_strategy) == 4
    for steps in per_strategy:
        # KV cache: the prompt once, then one token per step (without it: prompt_len, +1, +2, ...)
        assert [s["tokens"] for s in steps] == [prompt_len] + [1] * 4
        assert all(s["autocast"] and s["dtype"] == torch.bfloat16 and s["device"] == "cpu" for s in steps)


def test_same_seed_same_draws_and_no_autocast_without_a_dtype(tiny_lm, tok, monkeypatch):
    placement = Placement("cpu", None)
    seen = {"forward": [], "to": []}
    spy(tiny_lm, monkeypatch, seen)
    model = generation.place(tiny_lm, placement)
    kw = generation.strategies(params.load(ROOT / "params.yaml").generate)["top_k"]
    a = generation.generate(model, tok, "Congress must", 6, 3, placement, **kw)
    b = generation.generate(model, tok, "Congress must", 6, 3, placement, **kw)
    assert a == b and not any(s["autocast"] for s in seen["forward"])


def test_classify_moves_inputs_and_autocasts(tok, monkeypatch):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, n_positions=64, n_embd=16, n_layer=1, n_head=2, num_labels=2,
                                     id2label={0: "no", 1: "yes"}, label2id={"no": 0, "yes": 1}, pad_token_id=50256)
    model = transformers.GPT2ForSequenceClassification(config)
    seen = {"forward": [], "to": []}
    spy(model, monkeypatch, seen)
    placement = Placement("cpu", torch.bfloat16)
    out = generation.classify(generation.place(model, placement), tok, ["a text", "another"], placement)
    assert seen["to"] == ["cpu"] and len(seen["forward"]) == 2
    assert all(s["autocast"] and s["dtype"] == torch.bfloat16 for s in seen["forward"])
    assert [set(s["probabilities"]) for s in out] == [{"no", "yes"}] * 2
    assert all(abs(sum(s["probabilities"].values()) - 1) < 1e-4 for s in out)
