"""lm-evaluation-harness stages on the tiny pipeline: what they write, and that the harness's bits per byte on the
held-out documents agrees with ours (lmtune.eval.metrics, metrics/eval.json).

Two agreements:
1. Same windows, exact. The harness scores a document in rolling windows (lm_eval.utils.get_rolling_token_windows,
   context_len=1): the first window is [prefix token] + tokens[:L-1] predicting tokens[:L], each later one
   predicts the next L tokens from the L tokens before each of them; every token is predicted once, and its
   bytes are the document's UTF-8 bytes. Given those windows as blocks (context labels -100), our
   evaluate_causal_lm must give the same summed NLL per document and the same bits per byte, up to float32
   noise (different batch padding): tolerance 1e-4 relative.
2. The stages' outputs, within a stated tolerance. metrics/eval.json scores the validation stream (the 20
   documents joined by eos: 1,552 document tokens + 20 eos = 1,572) cut into 24 blocks of 64, predicting tokens
   1..63 of each: 1,512 tokens, 7,916 bytes. The harness (max_length 64 = the block size) scores each document
   on its own: all 1,552 document tokens, 8,221 bytes. Only the harness predicts the 24 block-first tokens and
   the 36 tokens after the last whole block (less the final eos); only ours predicts ~19 eos tokens (0 bytes);
   the 20 document-first tokens are predicted by the harness from its prefix token alone, by ours after the
   previous document. That is (24 + 36 + 19 + 20) / 1,552 = 6.4% of the tokens; both divide by the bytes of
   the tokens they score, so if those tokens cost up to 1.5x or down to 0.5x the mean, bits per byte moves by
   at most ~0.5 x 6.4% = 3.2%, and contexts are cut at different places (both average ~31 tokens).
   Tolerance: 5% relative, base and tuned (measured here: 1.2% for both, the harness lower). Counting tokens as
   bytes (~5x) or nats as bits (1.44x) fails it; the wrong model (base for tuned: 1% apart after 8 steps)
   only the exact check above catches.
"""
import json
import math
import re

import pytest

from repo_tools import copy_repo

pytestmark = pytest.mark.slow


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_tiny_pipeline_skips_the_harness_with_a_note(tiny_repro):
    root = tiny_repro.path
    h = json.loads((root / "metrics/harness.json").read_text())
    assert h == {"settings": {"tasks": []}, "skipped": "harness.tasks is empty", "base": {}, "tuned": {}}
    assert json.loads((root / "data/harness/about.json").read_text()) == {"skipped": "harness.tasks is empty"}
    assert (root / "metrics/harness_samples.jsonl").read_text() == ""


@pytest.fixture(scope="module")
def all_docs(tiny_repro, tmp_path_factory):
    """The held-out task on all 20 documents, windows of 64 tokens: only the harness stages rerun."""
    repo = copy_repo(tiny_repro, tmp_path_factory.mktemp("harness") / "repo")
    repo.set_params({"harness": {"tasks": ["lmtune_heldout"], "limit": None, "max_length": 64}})
    out = repo.dvc("repro").stdout
    assert set(re.findall(r"Running stage '(\w+)'", out)) == {"harness_data", "harness_base", "harness"}, out
    return repo


def test_stages_write_base_and_tuned_with_the_version_and_per_sample_logs(all_docs):
    import datasets
    import lm_eval

    root = all_docs.path
    h = json.loads((root / "metrics/harness.json").read_text())
    assert h["lm_eval_version"] == lm_eval.__version__ == "0.4.13"
    assert h["settings"] == {"tasks": ["lmtune_heldout"], "limit": None, "batch_size": 8, "max_length": 64}
    for which in ("base", "tuned"):
        task = h[which]["lmtune_heldout"]
        assert task["n_samples"] == task["n_documents"] == 20
        assert set(task["metrics"]) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
        bpb = task["metrics"]["bits_per_byte"]["value"]
        assert math.isclose(task["metrics"]["byte_perplexity"]["value"], 2 ** bpb, rel_tol=1e-9)
    assert h["base"] == json.loads((root / "metrics/harness_base.json").read_text())["base"]
    assert h["tuned"]["lmtune_heldout"]["metrics"] != h["base"]["lmtune_heldout"]["metrics"]
    # the documents are the pipeline's: data/flat's validation texts, and the oldest speeches of the corpus
    flat = datasets.load_from_disk(str(root / "data/flat"))["validation"]["text"]
    assert [d["text"] for d in read_jsonl(root / "data/harness/heldout.jsonl")] == flat
    about = json.loads((root / "data/harness/about.json").read_text())
    assert about["sotu_oldest"]["documents"] == 10 and about["sotu_oldest"]["in_training_data"] == []
    assert len(read_jsonl(root / "data/harness/sotu_oldest.jsonl")) == 10
    for name in ("harness_samples_base.jsonl", "harness_samples.jsonl"):
        samples = read_jsonl(root / "metrics" / name)
        assert [(s["task"], int(s["doc_id"])) for s in samples] == [("lmtune_heldout", i) for i in range(20)]
        assert [s["target"] for s in samples] == flat
    tuned_ll = [s["filtered_resps"][0] for s in read_jsonl(root / "metrics/harness_samples.jsonl")]
    bpb = -sum(tuned_ll) / math.log(2) / sum(len(t.encode("utf-8")) for t in flat)
    assert math.isclose(bpb, h["tuned"]["lmtune_heldout"]["metrics"]["bits_per_byte"]["value"], rel_tol=1e-9)


def harness_windows(tokens: list[int], prefix: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    return [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, prefix, max_length, context_len=1)]


def test_same_windows_give_the_same_bits_per_byte_exactly(all_docs):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmtune.eval import metrics

    root = all_docs.path
    h = json.loads((root / "metrics/harness.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(root / "models/export")
    tok = AutoTokenizer.from_pretrained(root / "models/export")
    prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id  # HFLM's prefix_token_id
    samples = read_jsonl(root / "metrics/harness_samples.jsonl")
    assert len(samples) == 20
    items, owner = [], []
    for i, s in enumerate(samples):
        for context, continuation in harness_windows(tok(s["target"], add_special_tokens=False)["input_ids"], prefix, 64):
            ids = context + continuation
            items.append({"input_ids": torch.tensor(ids), "labels": torch.tensor([-100] * len(context) + continuation)})
            owner.append(i)
    assert len(items) > len(samples)  # some documents span several windows
    ours = metrics.evaluate_causal_lm(model, items, 8, byte_lengths=metrics.token_byte_lengths(tok))
    per_doc = [0.0] * len(samples)
    for i, nll in zip(owner, ours["blocks"]["nll"]):
        per_doc[i] += nll
    for s, nll in zip(samples, per_doc):
        assert math.isclose(nll, -s["filtered_resps"][0], rel_tol=1e-4), (s["doc_id"], nll, s["filtered_resps"])
    assert ours["n_bytes"] == sum(len(s["target"].encode("utf-8")) for s in samples)  # same bytes
    harness_bpb = h["tuned"]["lmtune_heldout"]["metrics"]["bits_per_byte"]["value"]
    assert math.isclose(ours["bits_per_byte"], harness_bpb, rel_tol=1e-4), (ours["bits_per_byte"], harness_bpb)


def test_stage_outputs_agree_with_evaluate_within_the_stated_tolerance(all_docs):
    root = all_docs.path
    h = json.loads((root / "metrics/harness.json").read_text())
    ev = json.loads((root / "metrics/eval.json").read_text())
    for which in ("base", "tuned"):
        harness_bpb = h[which]["lmtune_heldout"]["metrics"]["bits_per_byte"]["value"]
        ours = ev[which]["bits_per_byte"]
        assert abs(harness_bpb - ours) <= 0.05 * ours, (which, harness_bpb, ours)
