"""lmtune/report: the one formatter of a task's metric declarations (console lines, card tables, the
model-index), the card's task facts and shipped defaults, and how samples are paired and shown."""
import json

import pytest
import torch
import transformers

from lmtune import params
from lmtune.errors import UserError
from lmtune.eval import generation
from lmtune.models import loading
from lmtune.report import card, metrics, samples
from task_helpers import EOS, bound, tok  # noqa: F401 (fixtures)

LM, INS = bound("causal_lm"), bound("instruction")
CLF = bound("classification", classification={"label_names": ["a", "b"]}, chunk={"mode": "pad"})

LM_METRICS = {"loss": 2.5, "perplexity": 12.182494, "accuracy": 0.253456, "n_tokens": 63}
CLF_METRICS = {"accuracy": 0.523456, "macro_f1": 0.333333, "n_examples": 4}


def test_printed_lines_and_card_tables():
    assert metrics.console_line(LM, "base", LM_METRICS) == (
        "base  loss 2.5000  perplexity 12.18  next-token accuracy 0.2535  (63 tokens)")
    assert metrics.console_line(CLF, "tuned", CLF_METRICS) == "tuned accuracy 0.5235  macro-F1 0.3333  (4 examples)"
    assert metrics.markdown_table(LM, {"base": LM_METRICS}) == [
        "| model | loss | perplexity | next-token accuracy | tokens |", "|---|---|---|---|---|",
        "| base | 2.5000 | 12.18 | 0.2535 | 63 |"]
    assert metrics.markdown_table(CLF, {"tuned": CLF_METRICS}) == [
        "| model | accuracy | macro-F1 | examples |", "|---|---|---|---|", "| tuned | 0.5235 | 0.3333 | 4 |"]
    assert metrics.model_index(LM, LM_METRICS) == [
        {"type": "perplexity", "name": "Perplexity (text tokens)", "value": 12.1825},
        {"type": "accuracy", "name": "Next-token accuracy (text tokens)", "value": 0.2535}]  # 4 decimals
    assert metrics.model_index(INS, LM_METRICS)[0]["name"] == "Perplexity (response tokens)"
    assert metrics.model_index(CLF, CLF_METRICS) == [
        {"type": "accuracy", "name": "Accuracy", "value": 0.5235},
        {"type": "f1", "name": "Macro F1", "value": 0.3333, "args": {"average": "macro"}}]
    assert card.facts(CLF) == ["- Labels: a, b"] and card.facts(LM) == []


def test_export_generation_config_and_its_card_line(tmp_path, tok):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50257, n_positions=16, n_embd=8, n_layer=1, n_head=2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path / "m")
    model = loading.load_model(tmp_path / "m", LM.head, 0)
    gp = params.load().generate.model_copy(update={"top_p": 0.8, "max_new_tokens": 7})
    model.generation_config = generation.export_config(gp, tok)
    gc = model.generation_config
    assert (gc.do_sample, gc.top_p, gc.top_k, gc.max_new_tokens, gc.pad_token_id, gc.eos_token_id) == (True, 0.8, 0, 7, EOS, EOS)
    assert card.shipped_defaults(LM, model) == [
        "`generation_config.json` ships top-p sampling as the default: do_sample=True, top_p=0.8, top_k=0, "
        "max_new_tokens=7. `pipeline()` and `generate()` use these unless you pass your own (e.g. `do_sample=False` for greedy)."]
    assert card.shipped_defaults(CLF, model) == []


def test_paired_samples_and_their_markdown():
    tuned = [{"prompt": "Hi | there", "strategy": "greedy", "settings": {"do_sample": False}, "text": " a<b>\nc"},
             {"prompt": "Hi | there", "strategy": "top_k", "settings": {"do_sample": True, "top_k": 5}, "text": ""}]
    base = [{**s, "text": "base"} for s in tuned]
    paired = generation.pair(base, tuned)
    assert [s["base_text"] for s in paired] == ["base", "base"] and paired[0]["text"] == " a<b>\nc"
    with pytest.raises(UserError) as e:
        generation.pair(base[:1], tuned)
    assert str(e.value) == ("base samples were made for other prompts or settings than the tuned ones (generate.*): "
                            "run `dvc repro` so that both come from the same params")
    assert samples.markdown(paired) == [
        "Prompt: `Hi | there`", "", "| strategy | settings | base | tuned |", "|---|---|---|---|",
        "| greedy | do_sample=False | base |  a&lt;b><br>c |",
        "| top_k | do_sample=True, top_k=5 | base |   |", ""]
    second = [{**paired[0], "prompt": "Bye"}]
    assert samples.markdown(paired[:1] + second)[5:] == [
        "", "Prompt: `Bye`", "", "| strategy | settings | base | tuned |", "|---|---|---|---|",
        "| greedy | do_sample=False | base |  a&lt;b><br>c |", ""]
    sent = [{**s, "input": "### Instruction:\nHi\n"} for s in paired[:1]]
    assert samples.markdown(sent)[0] == "Prompt: `Hi | there` (sent as `'### Instruction:\\nHi\\n'`)"
    assert samples.line(paired[0]) == "[greedy] Hi | there a<b>\nc\n"
    assert samples.line(sent[0]) == "[greedy] ### Instruction:\nHi\n a<b>\nc\n"
    clf_t = [{"prompt": "good", "label": "pos", "probabilities": {"neg": 0.25, "pos": 0.75}}]
    clf_b = [{"prompt": "good", "label": "neg", "probabilities": {"neg": 0.5, "pos": 0.5}}]
    pair = generation.pair(clf_b, clf_t)
    assert samples.markdown(pair) == ["| text | base | tuned |", "|---|---|---|",
                                          "| good | **neg** (0.500) | **pos** (0.750) |", ""]
    assert samples.line(clf_t[0]) == "[pos] good  {'neg': 0.25, 'pos': 0.75}"
    assert json.loads(json.dumps(pair))[0]["base_probabilities"] == {"neg": 0.5, "pos": 0.5}


def test_md_cell_escapes_what_breaks_a_table_cell():
    md_cell = samples.md_cell
    assert md_cell("a\\b|c&d<e\r\nf") == "a\\\\b\\|c&amp;d&lt;e<br>f"
    assert md_cell("") == " " and md_cell("\r") == " "
