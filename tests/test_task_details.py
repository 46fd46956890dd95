"""The task modules' smaller contracts, unit by unit (`make mutation` found them unchecked by the fast tests):
column dtypes of the chunks, the no-example error, tokenizers that add special tokens, LoRA configuration,
loading (safetensors only, the classifier's pad token, a merged adapter), and what each task prints and
writes into the model card and samples."""
import json

import numpy as np
import pyarrow as pa
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from lmtune import params, tasks
from lmtune.data.examples import numbered, pad_examples, scored_only
from lmtune.data.packing import labelled, pack_labelled, pad_labelled
from lmtune.device import Placement
from lmtune.errors import UserError
from lmtune.eval import generation, metrics
from lmtune.eval.evaluation import confusion_csv
from lmtune.models import loading, lora
from lmtune.tasks.classification import label_id
from task_helpers import EOS, bound, ds, tok  # noqa: F401 (fixtures)

LM, INS = bound("causal_lm"), bound("instruction")
CLF = bound("classification", classification={"label_names": ["neg", "pos"]}, chunk={"mode": "pad"})
IGNORE = -100
CPU = Placement("cpu", None)


def test_unknown_task_names_the_known_ones():
    with pytest.raises(KeyError) as e:
        tasks.get("summarization")
    assert e.value.args[0] == f"unknown task 'summarization'; known: {list(tasks.NAMES)}"


# ---- chunk: dtypes, empty input, the no-example error --------------------------------------------

def test_padded_and_packed_columns_keep_their_storage_dtypes():
    # ids stay in the tokens' dtype (uint16 for vocabularies <= 65,536), the mask is int8, the labels int32
    # (-100 and any id) and packed positions int32: the chunk files' size and the Arrow schema train reads.
    ids = [np.array([5, 6, 7], np.uint16), np.array([8, 9], np.uint16)]
    labels = [labelled(x, np.arange(len(x)) >= n) for x, n in zip(ids, [1, 0])]
    out = pad_examples(ids, 4, 0, [1, 0], dtype=np.uint16)
    assert (out["input_ids"].dtype, out["attention_mask"].dtype, out["labels"].dtype) == (np.uint16, np.int8, np.int32)
    packed = pack_labelled(ids, labels, 5, 0, dtype=np.uint32)
    assert (packed["input_ids"].dtype, packed["labels"].dtype, packed["position_ids"].dtype) == (np.uint32, np.int32, np.int32)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9]] and packed["labels"].tolist() == [[IGNORE, 6, 7, 8, 9]]


@pytest.mark.parametrize("block", [1, 4])
def test_packing_nothing_gives_empty_columns_of_the_right_shape(block):
    out = pack_labelled([], [], block, 0, dtype=np.uint16)
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
        "input_ids": ((0, block), np.uint16), "labels": ((0, block), np.int32), "position_ids": ((0, block), np.int32),
        "doc": ((0,), np.int64)}


def test_an_example_whose_only_target_is_position_1_is_kept():
    out = {"labels": np.array([[IGNORE, 5, IGNORE], [IGNORE, IGNORE, IGNORE], [7, IGNORE, IGNORE]])}
    assert scored_only(out)["labels"].tolist() == [[IGNORE, 5, IGNORE]]  # position 0 is never a target


def _tokens(task, cols, dtype=np.uint16):
    return ds(cols, task.token_features(np.dtype(dtype)))


def _examples(task, split, mode, block_size, where):
    task = bound(task.name, **{task.name: getattr(task.p, task.name)}, chunk={"mode": mode, "block_size": block_size})
    return task.examples(split, 0, where)


@pytest.mark.parametrize("task, cols, mode", [
    (LM, {"input_ids": [[1]]}, "pad"),
    (INS, {"input_ids": [[1, 2, 3]], "prompt_length": [3]}, "pad"),
    (INS, {"input_ids": [[1, 2, 3]], "prompt_length": [3]}, "pack"),
    (CLF, {"input_ids": [], "label": []}, "pad"),
])
def test_no_example_left_names_the_split_and_the_block_size(task, cols, mode):
    with pytest.raises(UserError) as e:
        _examples(task, _tokens(task, cols), mode, 8, "data/tokens validation")
    assert str(e.value) == "data/tokens validation: no example left with a token to learn within chunk.block_size=8"


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
@pytest.mark.parametrize("task, cols, mode", [
    (LM, {"input_ids": [[1, 2, 3]]}, "pad"),
    (INS, {"input_ids": [[1, 2, 3, 4]], "prompt_length": [1]}, "pad"),
    (INS, {"input_ids": [[1, 2, 3, 4]], "prompt_length": [1]}, "pack"),
    (CLF, {"input_ids": [[1, 2, 3]], "label": [1]}, "pad"),
])
def test_chunk_tables_store_ids_in_the_tokens_dtype(task, cols, mode, dtype):
    table = _examples(task, _tokens(task, cols, dtype), mode, 4, "here")
    ids_type = pa.from_numpy_dtype(dtype)
    assert table.column("input_ids").type == pa.list_(ids_type, 4)
    if mode == "pack":  # packed whole: positions restart per example instead of a padding mask
        assert table.column("position_ids").type == pa.list_(pa.int32(), 4) and "attention_mask" not in table.column_names
    else:
        assert table.column("attention_mask").type == pa.list_(pa.int8(), 4)
    want_labels = pa.int64() if task.name == "classification" else pa.list_(pa.int32(), 4)  # a class id per row, or -100/ids per token
    assert table.column("labels").type == want_labels


# ---- tokenizers that add special tokens ----------------------------------------------------------

@pytest.fixture(scope="module")
def bos_tok():
    """A tokenizer whose post-processor adds <s> in front, as Llama-family tokenizers do by default."""
    vocab = {"<s>": 0, "<eos>": 1, "<unk>": 2, **{w: i for i, w in enumerate("a b c d e f".split(), 3)}}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="<eos>")


def test_tokenize_adds_no_special_tokens_of_the_tokenizer(bos_tok):
    assert bos_tok("a b")["input_ids"] == [0, 3, 4]  # the fixture does add <s> when asked
    assert INS.tokenize_batch(bos_tok, {"prompt": ["a b"], "response": ["c"]}) == {
        "input_ids": [[3, 4, 5, 1]], "prompt_length": [2]}
    assert CLF.tokenize_batch(bos_tok, {"text": ["a b"], "text_pair": ["c d"], "label": [1]}) == {
        "input_ids": [[3, 4, 1, 5, 6]], "label": [1]}
    # without a pair column, or with no pair in a row, the text alone (no separator)
    assert CLF.tokenize_batch(bos_tok, {"text": ["a"], "label": [0]})["input_ids"] == [[3]]
    assert CLF.tokenize_batch(bos_tok, {"text": ["a", "b"], "text_pair": [None, "c"], "label": [0, 1]})["input_ids"] == [[3], [4, 1, 5]]


# ---- flatten --------------------------------------------------------------------------------------

def test_instruction_record_with_and_without_context():
    rec = {"instruction": " Name a color. ", "context": "Colors: red.", "response": " Red. "}
    out = INS.flatten_record(rec)
    assert out == {"prompt": "### Instruction:\nName a color.\n\n### Context:\nColors: red.\n\n### Response:\n", "response": "Red."}
    no_ctx = bound("instruction", instruction={"context_field": None})
    assert no_ctx.flatten_record(rec)["prompt"] == "### Instruction:\nName a color.\n\n### Response:\n"
    empty = INS.flatten_record({"instruction": None, "context": None, "response": None})
    assert empty == {"prompt": "### Instruction:\n\n\n### Response:\n", "response": ""}
    assert INS.keep_flat(out) and not INS.keep_flat(empty)


def test_classification_record_without_text_or_pair():
    f = bound("classification", classification={"text_field": "sentence", "text_pair_field": None, "label_names": ["neg", "pos"]})
    assert f.flatten_record({"sentence": None, "label": 0}) == {"text": "", "text_pair": None, "label": 0}
    assert not CLF.keep_flat({"text": "  "}) and CLF.keep_flat({"text": "ok"})


def test_label_ids_at_the_edges():
    names = ["a", "b", "c"]
    assert [label_id(v, names) for v in (0, 2, np.int64(1), "c")] == [0, 2, 1, 2]
    for bad in (3, -1, True, 1.0, None):
        with pytest.raises(UserError, match=r"classification.label_field: label .* is not a class id in \[0, 3\)"):
            label_id(bad, names)


def test_classification_param_problems_read_in_full():
    bad = bound("classification", chunk={"mode": "concat"}, classification={"label_names": ["neg", "pos"]})
    p = bad.p.model_copy(update={"classification": {**bad.p.classification, "label_names": ["only"]}})
    with pytest.raises(UserError) as e:
        tasks.load(p)
    assert str(e.value) == (
        "params.yaml: 2 problem(s): classification.label_names must list at least 2 class names; "
        "chunk.mode must be 'pad' when task is 'classification' (one example per row)")


def test_confusion_csv_uses_unix_line_ends():
    assert confusion_csv({"confusion_matrix": [[1, 0], [0, 1]], "support": {"n": 1, "p": 1}}) == "actual,predicted\nn,n\np,p\n"


# ---- models: loading and LoRA ---------------------------------------------------------------------

def _gpt2(tmp_path, name="m", cls=transformers.GPT2LMHeadModel, safetensors=True, **cfg):
    torch.manual_seed(0)
    config = transformers.GPT2Config(**{"vocab_size": 32, "n_positions": 16, "n_embd": 8, "n_layer": 1, "n_head": 2, **cfg})
    folder, model = tmp_path / name, cls(config)
    if safetensors:
        model.save_pretrained(folder)
    else:  # pickled weights only, as old hub repos ship them
        config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_load_model_reads_safetensors_only(tmp_path):
    pickled = _gpt2(tmp_path, safetensors=False)
    assert not list(pickled.glob("*.safetensors"))
    with pytest.raises(OSError):
        _load(LM, pickled)


def test_classifier_gets_its_labels_and_eos_as_pad_unless_it_has_a_pad(tmp_path):
    model = _load(CLF, _gpt2(tmp_path, eos_token_id=3), ["neg", "pos", "mixed"])
    assert model.config.num_labels == 3 and model.config.id2label == {0: "neg", 1: "pos", 2: "mixed"}
    assert model.config.label2id == {"neg": 0, "pos": 1, "mixed": 2} and model.config.pad_token_id == 3
    padded = _load(CLF, _gpt2(tmp_path, "p", eos_token_id=3, pad_token_id=7), ["neg", "pos"])
    assert padded.config.pad_token_id == 7


def _load(task, folder, names=None):
    """loading.load_model with the task's head and kwargs (a classifier bound to `names`)."""
    if names is not None:
        task = bound(task.name, classification={"label_names": names}, chunk={"mode": "pad"})
    return loading.load_model(folder, task.head, 0, **task.model_kwargs())


def _tuned(task, folder, base, names=None):
    if names is not None:
        task = bound(task.name, classification={"label_names": names}, chunk={"mode": "pad"})
    return lora.load_tuned(folder, base, task.head, 0, **task.model_kwargs())


def _wrap(task, model, lp, **kw):
    return lora.with_lora(model, task.head, lp, **kw)


def _lora(**changes):
    base = dict(enabled=True, r=4, alpha=8, dropout=0.1, target_modules=["c_attn"], modules_to_save=[])
    return params.LoraParams(**{**base, **changes})


@pytest.mark.parametrize("task, model_type, peft_type, fan_in_fan_out", [
    (LM, "gpt2", "CAUSAL_LM", True), (INS, "llama", "CAUSAL_LM", False), (CLF, "gpt2", "SEQ_CLS", True)])
def test_lora_config_carries_every_lora_param(task, model_type, peft_type, fan_in_fan_out):
    cfg = lora.lora_config(task.head, _lora(r=4, alpha=16, dropout=0.1, target_modules=["c_attn", "c_proj"]), model_type)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.fan_in_fan_out) == (4, 16, 0.1, fan_in_fan_out)  # not peft's 8, 8, 0
    assert set(cfg.target_modules) == {"c_attn", "c_proj"} and cfg.task_type == peft_type
    assert cfg.modules_to_save is None  # none asked: peft's own default, not an empty list
    assert lora.lora_config(task.head, _lora(modules_to_save=["score"]), model_type).modules_to_save == ["score"]
    assert lora.lora_config(task.head, _lora()).fan_in_fan_out is False  # unknown model type: plain nn.Linear layout


def test_with_lora_finds_dotted_targets_and_freezes_the_embeddings(tmp_path, monkeypatch):
    from lmtune import paths

    monkeypatch.setattr(paths, "ROOT", tmp_path)  # the base model lives inside the project
    model = _load(LM, _gpt2(tmp_path, "models/base"))
    wrapped = _wrap(LM, model, _lora(target_modules=["h.0.attn.c_attn"]))
    assert wrapped.peft_config["default"].fan_in_fan_out is True  # GPT-2's Conv1D
    # recorded relative to the project, so a clone elsewhere writes the same adapter_config.json
    assert wrapped.peft_config["default"].base_model_name_or_path == "models/base"
    outside = _wrap(LM, _load(LM, _gpt2(tmp_path.parent / f"{tmp_path.name}-out")), _lora())
    assert outside.peft_config["default"].base_model_name_or_path == str(tmp_path.parent / f"{tmp_path.name}-out" / "m")
    ids = torch.tensor([[1, 2, 3]])
    assert not wrapped.get_input_embeddings()(ids).requires_grad  # frozen, no checkpointing asked
    checkpointed = _wrap(LM, _load(LM, _gpt2(tmp_path)), _lora(), gradient_checkpointing=True)
    assert checkpointed.get_input_embeddings()(ids).requires_grad  # so checkpointed blocks get gradients


def test_load_tuned_merges_an_adapter_and_loads_plain_weights_as_they_are(tmp_path):
    base = _gpt2(tmp_path)
    assert not lora.is_adapter(base) and _tuned(LM, base, None).__class__ is transformers.GPT2LMHeadModel
    peft_model = _wrap(LM, _load(LM, base), _lora())
    torch.nn.init.normal_(peft_model.base_model.model.transformer.h[0].attn.c_attn.lora_B.default.weight)
    peft_model.save_pretrained(tmp_path / "adapter")
    assert lora.is_adapter(tmp_path / "adapter")
    merged = _tuned(LM, tmp_path / "adapter", base)
    assert merged.__class__ is transformers.GPT2LMHeadModel  # plain weights, no peft wrapper
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft_model.eval()(ids).logits, atol=1e-5)
        assert not torch.allclose(merged(ids).logits, _load(LM, base)(ids).logits, atol=1e-3)
    clf = _tuned(CLF, _gpt2(tmp_path, "c", cls=transformers.GPT2ForSequenceClassification, num_labels=2), None, ["n", "p"])
    assert clf.config.id2label == {0: "n", 1: "p"}
    head = _wrap(CLF, _load(CLF, base, ["n", "p", "x"]), _lora(modules_to_save=["score"]))
    head.save_pretrained(tmp_path / "clf-adapter")
    merged_clf = _tuned(CLF, tmp_path / "clf-adapter", base, ["n", "p", "x"])  # the base gets the 3-class head
    assert merged_clf.config.id2label == {0: "n", 1: "p", 2: "x"} and merged_clf.score.out_features == 3


# ---- evaluate, print, card, samples ---------------------------------------------------------------

def test_language_model_evaluation_adds_bytes_with_a_tokenizer(tmp_path, tok):
    model = _load(LM, _gpt2(tmp_path, vocab_size=50257))
    ids = [tok("The State of the")["input_ids"], tok("Union is strong.")["input_ids"]]
    assert [len(i) for i in ids] == [4, 4]
    blocks = ds({"input_ids": ids}, None).with_format("torch")
    plain = bound("causal_lm", evaluate={"batch_size": 2}).evaluate(model, blocks, tokenizer=None)
    assert plain == metrics.evaluate_causal_lm(model, blocks, 2)
    with_bytes = bound("causal_lm", evaluate={"batch_size": 2}).evaluate(model, blocks, tokenizer=tok)
    assert with_bytes == metrics.evaluate_causal_lm(model, blocks, 2, byte_lengths=metrics.token_byte_lengths(tok))
    # the UTF-8 bytes of the scored tokens' text: every token but each block's first
    assert with_bytes["n_bytes"] == sum(len(tok.decode(i[1:]).encode()) for i in ids) == len(" State of the is strong.")


def test_classifier_evaluation_names_the_classes(tmp_path):
    model = _load(CLF, _gpt2(tmp_path, eos_token_id=1), ["neg", "pos"])
    blocks = ds({"input_ids": [[2, 3, 1, 1], [4, 5, 6, 1], [7, 1, 1, 1]], "attention_mask": [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]],
                 "labels": [0, 1, 1]}, None).with_format("torch")
    r = metrics.evaluate_classifier(model, blocks.rename_column("labels", "label"), 2, 2)
    out = bound("classification", classification={"label_names": ["neg", "pos"]}, evaluate={"batch_size": 2}).evaluate(model, blocks, tokenizer=None)
    assert out == {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"], "n_examples": 3,
                   "support": {"neg": 1, "pos": 2}, "predicted_counts": dict(zip(["neg", "pos"], r["predicted_counts"])),
                   "confusion_matrix": r["confusion_matrix"], "blocks": r["blocks"]}


def test_samples_per_strategy_and_the_instruction_template(tmp_path, tok):
    model = _load(LM, _gpt2(tmp_path, vocab_size=50257))
    gp = params.load().generate.model_copy(update={"prompts": ["Hello"], "max_new_tokens": 2})
    every = generation.task_samples(LM, model, tok, gp, CPU)
    assert [s["strategy"] for s in every] == ["greedy", "temperature", "top_k", "top_p"] and "input" not in every[0]
    assert [s["strategy"] for s in generation.task_samples(LM, model, tok, gp, CPU, only="top_k")] == ["top_k"]
    templated = generation.task_samples(INS, model, tok, gp, CPU, only="greedy")
    assert templated[0]["input"] == "### Instruction:\nHello\n\n### Response:\n"
    assert "input" not in generation.task_samples(INS, model, tok, gp, CPU, only="greedy", raw=True)[0]
    clf = _load(CLF, _gpt2(tmp_path, "c", vocab_size=50257, eos_token_id=EOS), ["neg", "pos"])
    predicted = generation.task_samples(CLF, clf, tok, gp, CPU)
    assert [s["prompt"] for s in predicted] == ["Hello"] and predicted[0]["label"] in ("neg", "pos")


# ---- where each row came from: doc (the example, or a packed row's first one) and pos --------------------

def test_rows_name_their_example_through_padding_packing_and_dropping():
    ids = [np.array(x, np.uint16) for x in ([5, 6, 7], [8], [9, 10], [11, 12, 13, 14])]
    # example 1 is one token: nothing to score, dropped; the others keep their index in the split
    padded = numbered(scored_only(pad_examples(ids, 4, 0, dtype=np.uint16)))
    assert padded["doc"].tolist() == [0, 2, 3] and padded["pos"].tolist() == [0, 1, 2]
    labels = [labelled(x, np.ones(len(x), bool)) for x in ids]
    packed = pack_labelled(ids, labels, 6, 0, dtype=np.uint16)  # rows [0, 1, 2] and [3]: the first example each
    assert packed["doc"].tolist() == [0, 3]
    assert pad_labelled(ids, labels, 4, 0)["doc"].tolist() == [0, 1, 2, 3]


def test_each_task_ranks_by_its_one_ranking_metric():
    from lmtune import tasks

    assert (tasks.ranking(LM).key, tasks.ranking(INS).key, tasks.ranking(CLF).key) == ("perplexity", "perplexity", "accuracy")


def test_document_text_and_source_fields():
    assert LM.document_text({"text": "a b"}) == "a b"
    assert INS.document_text({"prompt": "Q: x\nA:", "response": " y"}) == "Q: x\nA: y"  # as the model reads it
    fp = CLF.settings
    assert CLF.source_fields() == [f for f in (fp.text_field, fp.text_pair_field, fp.label_field) if f]


def test_evaluate_passes_autocast_and_the_progress_label(monkeypatch):
    """Each task's evaluate hands the model, the blocks, its batch size, the autocast and the progress bar's label
    to the scoring function (recorded here; tests/test_metrics.py scores for real)."""
    calls = []

    def language_model(model, blocks, batch_size, *, tokenizer, autocast, desc):
        calls.append((model, blocks, batch_size, tokenizer, autocast, desc))
        return {"perplexity": 1.0}

    def classifier(model, blocks, batch_size, n_labels, *, autocast, desc):
        calls.append((model, blocks, batch_size, n_labels, autocast, desc))
        return {"accuracy": 0.5, "macro_f1": 0.5, "support": [1, 1], "predicted_counts": [2, 0],
                "confusion_matrix": [[1, 0], [1, 0]], "blocks": {}}

    monkeypatch.setattr(metrics, "evaluate_language_model", language_model)
    monkeypatch.setattr(metrics, "evaluate_classifier", classifier)
    amp = object()
    for task in (LM, INS):
        assert task.evaluate("m", "b", tokenizer="t", autocast=amp, desc="evaluate base") == {"perplexity": 1.0}
        assert calls.pop() == ("m", "b", task.p.evaluate.batch_size, "t", amp, "evaluate base")

    class Blocks:
        def rename_column(self, old, new):
            return ("renamed", old, new)

    out = CLF.evaluate("m", Blocks(), tokenizer="t", autocast=amp, desc="evaluate tuned")
    assert calls.pop() == ("m", ("renamed", "labels", "label"), CLF.p.evaluate.batch_size, 2, amp, "evaluate tuned")
    assert out["n_examples"] == 2 and out["support"] == {"neg": 1, "pos": 1}
