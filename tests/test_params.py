"""params.yaml schema: the committed file validates; bad values are all reported at once, by key."""
import copy

import pytest
import yaml

from lmtune import params
from lmtune.errors import UserError
from conftest import ROOT

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def bad(mutate) -> str:
    raw = copy.deepcopy(BASE)
    mutate(raw)
    with pytest.raises(UserError) as e:
        params.validate(raw)
    return str(e.value)


def test_committed_params_validate():
    p = params.load()
    assert p.chunk.block_size > 0 and p.train.learning_rate > 0


def test_unknown_key_is_named():
    msg = bad(lambda r: r["train"].update(learning_rat=1e-3))
    assert "train.learning_rat: unknown key" in msg


def test_wrong_type_is_named():
    msg = bad(lambda r: r["train"].update(batch_size="four"))
    assert "train.batch_size" in msg and "four" in msg


@pytest.mark.parametrize("key,value", [
    ("learning_rate", -1e-4), ("batch_size", 0), ("warmup_ratio", 1.5), ("max_steps", 0), ("weight_decay", -0.1),
    ("num_processes", 0), ("num_processes", 1.5), ("accelerate_config", ["a.yaml"]),
])
def test_out_of_range_train_values(key, value):
    assert f"train.{key}" in bad(lambda r: r["train"].update({key: value}))


def test_every_problem_reported_at_once():
    def mutate(r):
        r["train"]["learning_rate"] = -1
        r["chunk"]["block_size"] = 0
        r["evaluate"]["oops"] = 1
        del r["tokenize"]["num_proc"]
    msg = bad(mutate)
    assert "4 problem(s)" in msg
    for key in ("train.learning_rate", "chunk.block_size", "evaluate.oops: unknown key", "tokenize.num_proc: missing"):
        assert key in msg


def test_cross_field_rules():
    assert "model.name is required" in bad(lambda r: r["model"].update(source="hub", name=None))
    assert "data.train_file is required" in bad(lambda r: r["data"].update(source="files", train_file=None))
    assert "divisible" in bad(lambda r: r["model"]["gpt2"].update(n_embd=30, n_head=4))
    assert "early_stopping_patience" in bad(lambda r: r["train"].update(early_stopping_patience=2, eval_steps=0))


def test_load_reports_missing_and_invalid_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        params.load(tmp_path / "nope.yaml")
    f = tmp_path / "p.yaml"
    f.write_text("train: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        params.load(f)


@pytest.mark.parametrize("section,name,moved", [
    ("model", "gpt2", "openai-community/gpt2"), ("model", "distilgpt2", "distilbert/distilgpt2"),
    ("data", "wikitext", "Salesforce/wikitext"), ("data", "glue", "nyu-mll/glue"), ("data", "my_corpus", None),
])
def test_hub_id_without_namespace_is_one_line_naming_the_key(section, name, moved):
    msg = bad(lambda r: r[section].update(source="hub", name=name))
    assert "\n" not in msg and "1 problem(s)" in msg
    assert f"{section}.name: hub id {name!r} has no namespace" in msg and "namespace/name" in msg
    assert f"{section}: {section}.name" not in msg  # the key is named once
    assert (repr(moved) in msg) if moved else "hub page" in msg


def test_namespaced_hub_ids_and_local_folders_pass():
    raw = copy.deepcopy(BASE)
    raw["model"].update(source="hub", name="openai-community/gpt2")
    raw["data"].update(source="hub", name="Salesforce/wikitext")
    params.validate(raw)
    raw["model"].update(source="local", name="mymodel")  # a folder, not a hub id
    params.validate(raw)
