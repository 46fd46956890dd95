"""The chat recipe (smoltalk) end to end on its fixture, with the tiny GPT-2 opting into ChatML; and the
ShareGPT schema mapped onto messages by flatten params. Same runner as tests/test_recipes.py."""
import json

import datasets
import numpy as np
import pytest

from conftest import ROOT, make_repo
from lmtune import params, tasks
from test_recipes import EOS, FIX, read, run_recipe, shown_experiments


def fixture_conversations(split: str) -> list[list[dict]]:
    return list(datasets.load_dataset("parquet", data_files=str(ROOT / FIX / f"smoltalk/{split}.parquet"),
                                      split="train")["messages"])


@pytest.mark.slow
def test_smoltalk_end_to_end(tmp_path):
    from transformers import AutoTokenizer, pipeline

    repo = make_repo(tmp_path / "repo")
    run_recipe(repo, "smoltalk")
    root = repo.path
    tok = AutoTokenizer.from_pretrained(root / "models/base")
    assert tok.chat_template and "eos_token" in tok.chat_template  # the opted-in ChatML, saved with the model
    flat = datasets.load_from_disk(root / "data/flat")
    assert flat["train"].column_names == ["messages"] and list(flat["train"]["messages"]) == fixture_conversations("train")
    # packed rows: several conversations per row, positions restarting at each, no padding mask
    chunks = datasets.load_from_disk(root / "data/chunks")
    train = chunks["train"].with_format("numpy")[:]
    assert "attention_mask" not in chunks["train"].column_names
    per_row = (train["position_ids"] == 0).sum(1)
    assert per_row.max() > 2
    # what the loss sees, decoded: each assistant reply followed by eos, nothing else
    tokens = datasets.load_from_disk(root / "data/tokens")["validation"]
    scored = "".join(tok.decode([i for i, m in zip(ids, mask) if m])
                     for ids, mask in zip(tokens["input_ids"], tokens["assistant_mask"]))
    replies = [m["content"] for c in fixture_conversations("test") for m in c if m["role"] == "assistant"]
    assert scored == "".join(r + tok.eos_token for r in replies)
    # the rows keep those labels, up to the 128-token row a longer conversation is truncated to
    val = chunks["validation"].with_format("numpy")[:]
    assert int((val["labels"] != -100).sum()) == sum(int(np.sum(m[:128])) for m in tokens["assistant_mask"])
    ev = read(repo, "metrics/eval.json")
    n_val = len(fixture_conversations("test"))
    for m in ev.values():
        assert m["n_prompts"] == n_val and 0 <= m["stops"] <= 1
        assert m["n_tokens"] == int((val["labels"][:, 1:] != -100).sum())
    assert ev["tuned"]["loss"] < ev["base"]["loss"]
    samples = json.loads((root / "models/export/samples.json").read_text())
    assert all(s["input"] == f"<|im_start|>user\n{s['prompt']}<|endoftext|>\n<|im_start|>assistant\n" for s in samples)
    card = (root / "models/export/README.md").read_text()
    assert "replies that stop" in card and 'pipe(messages' in card
    # transformers' own pipeline takes a list of messages and renders them with the exported template
    pipe = pipeline("text-generation", model=str(root / "models/export"))
    out = pipe([{"role": "user", "content": "Hello?"}], max_new_tokens=3, do_sample=False)
    assert out[0]["generated_text"][-1]["role"] == "assistant"
    assert tok.eos_token_id == EOS and "smoltalk" in shown_experiments(repo)


def test_sharegpt_conversations_map_onto_messages():
    task = tasks.load(yaml_params({"flatten": {"messages_field": "conversations", "role_key": "from",
                                               "content_key": "value", "role_names": {"human": "user", "gpt": "assistant"}}}))
    rows = [json.loads(line) for line in (ROOT / FIX / "sharegpt/train.jsonl").read_text().splitlines()]
    ds = datasets.load_dataset("json", data_files=str(ROOT / FIX / "sharegpt/train.jsonl"), split="train")
    assert task.source_fields() == ["conversations"]
    flat = [task.flatten_record(r) for r in ds]
    names = {"system": "system", "human": "user", "gpt": "assistant"}
    assert [f["messages"] for f in flat] == [[{"role": names[t["from"]], "content": t["value"]} for t in r["conversations"]]
                                             for r in rows]
    assert any(f["messages"][0]["role"] == "system" for f in flat)  # system prompts kept
    assert all(task.keep_flat(f) for f in flat)


def yaml_params(overrides: dict):
    import yaml

    from lmtune.cli.recipe import deep_update

    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    return params.validate(deep_update(base, {"task": "chat", "chunk": {"mode": "pack"}, **overrides}))


def test_a_role_outside_the_mapping_names_the_param():
    p = yaml_params({"flatten": {"messages_field": "conversations", "role_key": "from", "content_key": "value"}})
    ds = datasets.load_dataset("json", data_files=str(ROOT / FIX / "sharegpt/train.jsonl"), split="train")
    with pytest.raises(Exception, match="flatten.role_names"):
        tasks.load(p).flatten_record(ds[0])
    assert np.all([isinstance(x, dict) for x in ds[0]["conversations"]])
