"""The exact one-line messages params.yaml problems give: what a user reads (`make mutation` found only parts
of them checked)."""
import copy

import pytest
import yaml

from conftest import ROOT
from lmtune import params, tasks
from lmtune.errors import UserError

BASE = yaml.safe_load((ROOT / "params.yaml").read_text())


def message(mutate, source=None) -> str:
    raw = copy.deepcopy(BASE)
    mutate(raw)
    with pytest.raises(UserError) as e:
        params.validate(raw) if source is None else params.validate(raw, source)
    return str(e.value)


def test_field_check_names_the_key_and_the_value_given():
    assert message(lambda r: r["train"].update(batch_size="four")) == (
        "params.yaml: 1 problem(s): train.batch_size: Input should be a valid integer, unable to parse string as an "
        "integer (got 'four')")


def test_section_checks_read_without_pydantic_prefix_or_the_section_dump():
    # A section's own validator: its message, after the section's key, without "Value error, " and without
    # "(got {...the whole section...})".
    assert message(lambda r: r["model"]["gpt2"].update(n_embd=30, n_head=4)) == (
        "params.yaml: 1 problem(s): model.gpt2: n_embd (30) must be divisible by n_head (4)")
    assert message(lambda r: r["model"].update(source="hub", name=None)) == (
        "params.yaml: 1 problem(s): model.name is required when model.source is 'hub'")
    # A task's own cross-section checks run where the task is loaded (tasks.load), one problem per key.
    raw = copy.deepcopy(BASE)
    raw["task"] = "classification"
    with pytest.raises(UserError) as e:
        tasks.load(params.validate(raw, "p.yaml"), "p.yaml")
    assert str(e.value) == (
        "p.yaml: 2 problem(s): classification.label_names must list at least 2 class names; chunk.mode must be 'pad' when task is 'classification' (one example per row)")


def test_several_problems_are_joined_in_one_line():
    msg = message(lambda r: (r["train"].update(batch_size=0), r["chunk"].update(block_size=0)))
    assert msg.startswith("params.yaml: 2 problem(s): ") and "\n" not in msg
    problems = msg.removeprefix("params.yaml: 2 problem(s): ").split("; ")
    assert sorted(p.split(":")[0] for p in problems) == ["chunk.block_size", "train.batch_size"]


def test_load_names_the_file_in_every_message(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({**BASE, "seed": "x"}), encoding="utf-8")
    with pytest.raises(UserError, match=r"^mine\.yaml: 1 problem\(s\): seed: "):
        params.load(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(UserError) as e:
        params.load(f)
    assert str(e.value) == f"{f}: expected a mapping of sections at the top level"
    f.write_text("train: [unclosed\n")
    with pytest.raises(UserError) as e:
        params.load(f)
    with pytest.raises(yaml.YAMLError) as parse:
        yaml.safe_load(f.read_text())
    # yaml's own multi-line message (it names the line and column), folded into one line
    assert str(e.value) == f"{f}: not valid YAML: {' '.join(str(parse.value).split())}" and "line 1" in str(e.value)


@pytest.mark.parametrize("name", ["gpt2", "gpt2/", "/gpt2", "my_corpus"])
def test_hub_id_without_namespace_even_with_a_stray_slash(name):
    msg = message(lambda r: r["data"].update(source="hub", name=name))
    # (the known-move hint is looked up by the id as written: "gpt2/" gets the general one)
    hint = "use 'openai-community/gpt2'" if name == "gpt2" else "use the repo's 'namespace/name' id as shown on its hub page"
    assert msg == (f"params.yaml: 1 problem(s): data.name: hub id {name!r} has no namespace; huggingface_hub rejects "
                   f"single-segment ids ('namespace/name' required), {hint}")


@pytest.mark.parametrize("name", ["nyu-mll/glue", "someone/X", "/someone/model/"])
def test_namespaced_hub_ids_pass(name):
    assert params.hub_id_problem("data.name", name) is None


def load_task(**changes) -> list[str]:
    """The problems tasks.load reports for params.yaml with `changes` (section -> keys), [] when it loads."""
    raw = copy.deepcopy(BASE)
    for section, value in changes.items():
        raw[section] = {**raw[section], **value} if isinstance(value, dict) else value
    try:
        tasks.load(params.validate(raw, "p.yaml"), "p.yaml")
    except UserError as e:
        head, _, rest = str(e).partition(" problem(s): ")
        assert head.startswith("p.yaml: ") and "\n" not in rest
        return rest.split("; ")
    return []


def test_chunk_mode_values_are_checked_with_the_others_in_one_message():
    msg = message(lambda r: (r["chunk"].update(mode="packed"), r["train"].update(batch_size=0)))
    assert msg.startswith("params.yaml: 2 problem(s): ") and "\n" not in msg
    assert "chunk.mode: Input should be 'concat', 'pack' or 'pad' (got 'packed')" in msg and "train.batch_size" in msg


@pytest.mark.parametrize("task, refused", [("instruction", "concat"), ("chat", "concat"), ("causal_lm", "pack")])
def test_each_task_refuses_the_chunk_mode_that_is_not_its_own(task, refused):
    allowed = {"instruction": ["pack", "pad"], "chat": ["pack", "pad"], "causal_lm": ["concat", "pad"]}[task]
    for mode in allowed:
        assert load_task(task=task, chunk={"mode": mode}) == []
    [problem] = load_task(task=task, chunk={"mode": refused})
    assert problem.startswith(f"chunk.mode must be '{allowed[0]}' or '{allowed[1]}' when task is '{task}' (")
    # the message names the mode that does what the user asked for: packing is `pack`
    assert ("'pack' puts whole" in problem and "'concat' would cut the concatenation across" in problem) \
        if refused == "concat" else "'pack' keeps each example whole in one row" in problem


def test_classification_refuses_pack_beside_its_other_problems():
    assert load_task(task="classification", chunk={"mode": "pack"}) == [
        "classification.label_names must list at least 2 class names",
        "chunk.mode must be 'pad' when task is 'classification' (one example per row)"]


def test_a_check_across_sections_is_reported_at_the_top_level():
    def longer_window(r):
        r["model"].update(source="gpt2_config")
        r["harness"].update(max_length=r["model"]["gpt2"]["n_positions"] + 1)

    n = BASE["model"]["gpt2"]["n_positions"]
    assert message(longer_window) == (
        f"params.yaml: 1 problem(s): (top level): harness.max_length: {n + 1} is longer than the model's context "
        f"(model.gpt2.n_positions {n})")


def test_load_params_names_the_file_and_reports_every_section_at_once(tmp_path):
    """tasks.load_params: the file's own name heads the message; the shared sections' problems and the running
    task's own section's come in one message; a valid file gives the params and the task bound to them."""
    raw = copy.deepcopy(BASE)
    raw["train"]["batch_size"] = 0
    raw["causal_lm"]["joiner"] = 3
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError) as e:
        tasks.load_params(path)
    assert str(e.value) == ("mine.yaml: 2 problem(s): train.batch_size: Input should be greater than 0 (got 0); "
                            "causal_lm.joiner: Input should be a valid string (got 3)")
    path.write_text(yaml.safe_dump(BASE))
    p, task = tasks.load_params(path)
    assert p.task == task.name == "causal_lm" and task.settings.text_fields == BASE["causal_lm"]["text_fields"]
    assert task.p is p


def test_load_validates_the_task_section_once(monkeypatch):
    settings = tasks.get("causal_lm").Settings
    calls = []
    validate = settings.model_validate
    monkeypatch.setattr(settings, "model_validate", lambda section: calls.append(section) or validate(section))
    task = tasks.load(params.validate(copy.deepcopy(BASE), "p.yaml"))
    assert len(calls) == 1 and task.settings.joiner == BASE["causal_lm"]["joiner"]


def test_validate_names_the_source_of_every_kind_of_problem():
    raw = copy.deepcopy(BASE)
    raw.update(task="classification", chunk={**raw["chunk"], "mode": "pad"})  # its label_names: [] (a task problem)
    with pytest.raises(UserError, match=r"^x\.yaml: 1 problem\(s\): classification\.label_names must list"):
        tasks.validate(raw, "x.yaml")
    raw["train"] = {**raw["train"], "batch_size": 0}  # and a shared section's
    with pytest.raises(UserError, match=r"^x\.yaml: 2 problem\(s\): train\.batch_size.*; classification\.label_names"):
        tasks.validate(raw, "x.yaml")
    # an unknown task with a section of its name: the schema's two problems, not a lookup of a task module
    raw = {**copy.deepcopy(BASE), "task": "summarization", "summarization": {"x": 1}}
    with pytest.raises(UserError) as e:
        tasks.validate(raw, "x.yaml")
    assert str(e.value).startswith("x.yaml: 2 problem(s): task: Input should be ") and "summarization: unknown key" in str(e.value)


def test_instruction_refuses_concat_in_full():
    assert load_task(task="instruction", chunk={"mode": "concat"}) == [
        "chunk.mode must be 'pack' or 'pad' when task is 'instruction' ('pack' puts whole examples several per "
        "row, each attending only to itself: 'concat' would cut the concatenation across examples)"]
