"""The bad-input matrix: each case is one mistake a user can make. Running the stage that reads it must
give exactly one line `error: ...` naming the key, file, line or column at fault, exit non-zero (2), and
leave every output (data/, models/, metrics/) byte-for-byte as it was.

Stage modules are run directly on a copy of the reproduced tiny pipeline: `dvc repro` deletes a stage's
outputs before running it, so "no changed outputs" is only observable this way. One case also goes
through `dvc repro` to show the same single line and a non-zero exit there.
"""
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from repo_tools import copy_repo, leftovers, tree_hashes

pytestmark = pytest.mark.slow


@dataclass
class Case:
    stage: str                       # stage module to run (or "recipe": python -m lmtune.cli.recipe)
    expect: list[str]                # regexes the error line must match (key, file, line, column)
    params: dict = field(default_factory=dict)
    setup: Callable | None = None    # setup(repo, scratch) -> params overrides (or None)
    args: tuple = ()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def data_file(name: str, data: bytes, which="train"):
    def setup(repo, scratch):
        return {"data": {f"{which}_file": str(write(scratch / name, data))}}
    return setup


def model_dir(kind: str):
    """A local model folder made from models/base, then damaged in one way."""
    def setup(repo, scratch):
        d = scratch / f"model-{kind}"
        shutil.copytree(repo.path / "models/base", d)
        if kind == "noweights":
            for f in d.glob("*.safetensors"):
                f.unlink()
            write(d / "pytorch_model.bin", b"pickled weights are never loaded")
        elif kind == "corrupt":
            blob = (d / "model.safetensors").read_bytes()
            write(d / "model.safetensors", blob[: len(blob) // 3])  # truncated download
        elif kind == "encoder":  # a text classifier's encoder (DistilBERT), not a language model
            from transformers import DistilBertConfig, DistilBertModel

            for f in d.glob("*.safetensors"):
                f.unlink()
            cfg = DistilBertConfig(vocab_size=64, dim=8, n_layers=1, n_heads=2, hidden_dim=16, max_position_embeddings=32)
            DistilBertModel(cfg).save_pretrained(d)
        elif kind == "remote_code":
            cfg = json.loads((d / "config.json").read_text())
            cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
            cfg["model_type"] = "evil_gpt"
            (d / "config.json").write_text(json.dumps(cfg))
            marker = scratch / "REMOTE_CODE_RAN"
            (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
        return {"model": {"source": "local", "name": str(d)}}
    return setup


def tiny_validation_tokens(repo, scratch):
    """data/tokens whose validation split holds 10 tokens, fewer than one 64-token block."""
    import datasets

    tokens = datasets.load_from_disk(repo.path / "data/tokens")
    small = tokens["validation"].select([0]).map(lambda r: {"input_ids": r["input_ids"][:10]})
    out = datasets.DatasetDict(train=tokens["train"], validation=small)
    tmp = scratch / "tokens"
    out.save_to_disk(tmp)
    shutil.rmtree(repo.path / "data/tokens")
    shutil.copytree(tmp, repo.path / "data/tokens")
    return None


def raw_with_labels(repo, scratch):
    """data/raw of a 2-class task where one validation row carries a label outside the class list."""
    import datasets

    rows = {"text": ["good speech", "bad speech", "fine words"], "label": ["pos", "neg", "pos"]}
    bad = {"text": ["so so", "great"], "label": ["pos", "neutral"]}
    raw = datasets.DatasetDict(train=datasets.Dataset.from_dict(rows), validation=datasets.Dataset.from_dict(bad))
    shutil.rmtree(repo.path / "data/raw")
    raw.save_to_disk(repo.path / "data/raw")
    return {"task": "classification", "chunk": {"mode": "pad"},
            "classification": {"text_field": "text", "label_field": "label", "label_names": ["neg", "pos"]}}


def invalid_yaml(repo, scratch):
    text = (repo.path / "params.yaml").read_text()
    (repo.path / "params.yaml").write_text(text.replace("train:\n", "train: [\n", 1))
    return None


CASES = {
    # params.yaml (checked by every stage before it reads anything; flatten is the cheapest to start)
    "unknown_params_key": Case("flatten", [r"train\.learning_rat\b", "unknown key"], {"train": {"learning_rat": 1e-3}}),
    "wrong_type": Case("flatten", [r"train\.batch_size", "integer", "'four'"], {"train": {"batch_size": "four"}}),
    "out_of_range_warmup": Case("flatten", [r"train\.warmup_ratio", "less than 1", "1.5"], {"train": {"warmup_ratio": 1.5}}),
    "out_of_range_learning_rate": Case("flatten", [r"train\.learning_rate", "greater than 0"], {"train": {"learning_rate": -0.1}}),
    "params_not_yaml": Case("flatten", ["params.yaml", "not valid YAML", "line"], setup=invalid_yaml),
    "task_chunking_mismatch": Case("flatten", [r"chunk\.mode", "classification"],
                                   {"task": "classification", "classification": {"label_names": ["neg", "pos"]}, "chunk": {"mode": "concat"}}),
    "block_size_above_context": Case("chunk", [r"chunk\.block_size", r"\b256\b", r"\b128\b"], {"chunk": {"block_size": 256}}),
    "validation_below_one_block": Case("chunk", ["validation", r"\b10 tokens", r"chunk\.block_size=64"], setup=tiny_validation_tokens),
    # data files
    "missing_data_file": Case("download", [r"data\.train_file", "not found", "nope.txt"], {"data": {"train_file": "nope.txt"}}),
    "empty_data_file": Case("download", [r"data\.train_file", "empty", "empty.txt"], setup=data_file("empty.txt", b"")),
    "not_utf8": Case("download", [r"data\.validation_file", "latin1.txt", "line 2", "not UTF-8"],
                     setup=data_file("latin1.txt", "fine\ncaf\u00e9 au lait\n".encode("latin-1"), "validation")),
    "json_line_does_not_parse": Case("download", [r"data\.train_file", "bad.jsonl", "line 3", "not valid JSON"],
                                     setup=data_file("bad.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": "c"\n{"text": "d"}\n')),
    "label_outside_class_list": Case("flatten", [r"classification\.label_names", "'neutral'", r"\['neg', 'pos'\]"], setup=raw_with_labels),
    "missing_column": Case("flatten", [r"\bbody\b", "missing column", "data/raw train"], {"causal_lm": {"text_fields": ["body"]}}),
    # model folders
    "model_folder_without_weights": Case("download", ["model-noweights", r"no \*\.safetensors weights"], setup=model_dir("noweights")),
    "corrupt_safetensors": Case("download", [r"model-corrupt/model\.safetensors", "not a valid safetensors"], setup=model_dir("corrupt")),
    "task_model_mismatch": Case("download", ["model-encoder", "'distilbert' model", "AutoModelForCausalLM"], setup=model_dir("encoder")),
    "model_needs_remote_code": Case("download", ["model-remote_code", "trust_remote_code"], setup=model_dir("remote_code")),
    # recipes
    "unknown_recipe": Case("recipe", ["unknown recipe 'nosuch'", "known recipes"], args=("nosuch", "--dry-run")),
}


@pytest.fixture(scope="module")
def bad_base(tiny_repro, tmp_path_factory):
    return copy_repo(tiny_repro, tmp_path_factory.mktemp("bad") / "repo")


def prepare(repo, case: Case, scratch: Path) -> list[str]:
    """Apply the case's params and files; return the command that reads them."""
    overrides = dict(case.params)
    if case.setup:
        overrides.update(case.setup(repo, scratch) or {})
    if overrides:
        repo.set_params(overrides)
    if case.stage == "recipe":
        return [sys.executable, "-m", "lmtune.cli.recipe", *case.args]
    return [sys.executable, "-m", f"stages.{case.stage}"]


def error_line(proc) -> str:
    """The stage's one error line; fails if there is a traceback or more than one error line."""
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-4000:]
    assert proc.stderr.rstrip().splitlines()[-1] == errors[0], proc.stderr[-4000:]
    return errors[0]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(bad_base, tmp_path, name):
    case = CASES[name]
    repo = bad_base
    params_text = (repo.path / "params.yaml").read_text()
    data_backup = tmp_path / "data-backup"  # some cases replace an input (data/raw, data/tokens) on purpose
    shutil.copytree(repo.path / "data", data_backup)
    try:
        cmd = prepare(repo, case, tmp_path)
        before = tree_hashes(repo.path, skip=())  # after setup: it may replace an input on purpose
        proc = repo.run(*cmd, check=False)
        assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        line = error_line(proc)
        for pattern in case.expect:
            assert re.search(pattern, line), f"{pattern!r} not in {line!r}"
        assert tree_hashes(repo.path, skip=()) == before, "outputs changed"
        assert leftovers(repo.path) == []
        assert not (tmp_path / "REMOTE_CODE_RAN").exists(), "remote code was executed"
    finally:
        (repo.path / "params.yaml").write_text(params_text)
        shutil.rmtree(repo.path / "data")
        shutil.copytree(data_backup, repo.path / "data")


def test_bad_input_through_dvc_repro_is_one_line_and_non_zero(bad_base, tmp_path):
    repo = copy_repo(bad_base, tmp_path / "repo")
    repo.set_params({"data": {"validation_file": str(write(tmp_path / "latin1.txt", b"caf\xe9\n"))}})
    proc = repo.dvc("repro", check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-4000:]
    assert re.search(r"data\.validation_file: \S*latin1\.txt line 1 is not UTF-8", errors[0]), errors
    assert "failed to reproduce 'download'" in proc.stderr
