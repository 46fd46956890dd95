"""The tiny end-to-end `dvc repro`: 2-layer GPT-2 from config, GPT-2's real BPE, fixture text."""
import json
import math

import datasets
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from repo_tools import copy_repo

pytestmark = pytest.mark.slow


def test_repro_writes_every_out(tiny_repro):
    root = tiny_repro.path
    raw = datasets.load_from_disk(root / "data/raw")
    assert set(raw) == {"train", "validation"} and len(raw["train"]) > 0
    flat = datasets.load_from_disk(root / "data/flat")
    assert flat["train"].column_names == ["text"]
    tokens = datasets.load_from_disk(root / "data/tokens")
    assert tokens["train"].features["input_ids"].feature.dtype == "uint16"
    chunks = datasets.load_from_disk(root / "data/chunks")
    assert len(chunks["train"][0]["input_ids"]) == 64 and len(chunks["validation"]) > 0
    assert (root / "models/base/model.safetensors").is_file()
    assert (root / "models/final/model.safetensors").is_file()
    assert not (root / "models/checkpoints").exists()  # crash-resume scratch, removed after a finished run
    train = json.loads((root / "metrics/train.json").read_text())
    assert train["steps"] == 8 and train["train_tokens"] == 8 * 4 * 64
    ev = json.loads((root / "metrics/eval.json").read_text())
    assert set(ev) == {"base", "tuned"}
    assert ev["base"]["n_tokens"] == ev["tuned"]["n_tokens"] == len(chunks["validation"]) * 63
    assert ev["base"] == json.loads((root / "metrics/eval_base.json").read_text())["base"]  # copied from evaluate_base
    # per-block rows sum back to the totals: summed NLL / tokens = loss, bytes = n_bytes
    import csv
    rows = list(csv.DictReader(open(root / "metrics/blocks.csv")))
    assert len(rows) == len(chunks["validation"]) and sum(int(r["n_tokens"]) for r in rows) == ev["tuned"]["n_tokens"]
    for m in ("base", "tuned"):
        total = math.fsum(float(r[f"{m}_nll"]) for r in rows)
        assert total / ev[m]["n_tokens"] == pytest.approx(ev[m]["loss"], rel=1e-12)
        assert sum(int(r["n_bytes"]) for r in rows) == ev[m]["n_bytes"]
        assert ev[m]["bits_per_byte"] == pytest.approx(total / math.log(2) / ev[m]["n_bytes"], rel=1e-12)
    # A random-init model starts near log(50257) = 10.8 nats; 8 steps at lr 1e-3 must bring it down.
    assert ev["tuned"]["loss"] < ev["base"]["loss"]
    export = root / "models/export"
    card = (export / "README.md").read_text()
    assert "data/raw" in card and "models/base" in card  # dvc.lock hashes of its inputs
    assert (root / "metrics/train/plots/metrics/loss.tsv").is_file()  # dvclive curve (per logged step)


def test_export_is_the_trained_model_with_a_working_tokenizer_and_real_samples(tiny_repro):
    """The export's content, not only its files: models/final's weights, the base tokenizer, the generation
    settings from params, and samples that transformers alone reproduces from the exported folder."""
    root = tiny_repro.path
    export, final = root / "models/export", root / "models/final"
    exported, trained = load_file(export / "model.safetensors"), load_file(final / "model.safetensors")
    assert exported.keys() == trained.keys() and all(torch.equal(exported[k], trained[k]) for k in trained)
    base = load_file(root / "models/base/model.safetensors")
    assert any(not torch.equal(exported[k], base[k]) for k in base)  # trained, not the base re-saved

    text = "My fellow Americans, caf\u00e9 \u2014 1790\u20132026!\n"
    tok, base_tok = AutoTokenizer.from_pretrained(export), AutoTokenizer.from_pretrained(root / "models/base")
    ids = tok(text)["input_ids"]
    assert ids == base_tok(text)["input_ids"] and tok.decode(ids) == text
    assert (tok.eos_token_id, tok.pad_token_id) == (base_tok.eos_token_id, base_tok.pad_token_id) == (50256, 50256)

    gp = yaml.safe_load((root / "params.yaml").read_text())["generate"]
    gen = GenerationConfig.from_pretrained(export)
    assert (gen.max_new_tokens, gen.top_p, gen.do_sample, gen.eos_token_id) == (gp["max_new_tokens"], gp["top_p"], True, 50256)

    samples = json.loads((export / "samples.json").read_text())
    strategies = ["greedy", "temperature", "top_k", "top_p"]
    assert [(s["prompt"], s["strategy"]) for s in samples] == [(p, st) for p in gp["prompts"] for st in strategies]
    assert all(s["text"].strip() for s in samples), samples
    # Every sample, greedy and sampled, again with plain transformers `generate` from the exported folder (tuned)
    # and models/base (base), seeded as params say; each strategy's knobs spelled out here from params.yaml, not
    # taken from lmtune.eval.generation, and every knob given, so the folder's own generation_config.json
    # (do_sample, top_p) cannot stand in for one.
    knobs = {"greedy": {"do_sample": False},
             "temperature": {"do_sample": True, "temperature": gp["temperature"], "top_k": 0, "top_p": 1.0},
             "top_k": {"do_sample": True, "temperature": 1.0, "top_k": gp["top_k"], "top_p": 1.0},
             "top_p": {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": gp["top_p"]}}
    models = {"text": AutoModelForCausalLM.from_pretrained(export, use_safetensors=True).eval(),
              "base_text": AutoModelForCausalLM.from_pretrained(root / "models/base", use_safetensors=True).eval()}
    for s in samples:
        enc = tok(s["prompt"], return_tensors="pt")
        for key, model in models.items():
            torch.manual_seed(gp["seed"])
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=gp["max_new_tokens"], pad_token_id=50256,
                                     **knobs[s["strategy"]])
            assert tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True) == s[key], (key, s)
    # The sampled strategies really sample: each differs from greedy for some prompt.
    by = {(s["prompt"], s["strategy"]): s["text"] for s in samples}
    for st in ("temperature", "top_k", "top_p"):
        assert any(by[(p, st)] != by[(p, "greedy")] for p in gp["prompts"]), st


def test_blocks_name_their_document_and_compare_resamples_documents(tiny_repro, tmp_path):
    """metrics/blocks.csv and blocks_base.csv carry each block's document (the data/tokens row of its first
    token) and stream position, and compare then resamples whole documents."""
    import csv

    import numpy as np

    root = tiny_repro.path
    tokens = datasets.load_from_disk(root / "data/tokens")["validation"]
    stream = np.concatenate([np.asarray(ids) for ids in tokens["input_ids"]])
    token_doc = np.repeat(np.arange(len(tokens)), [len(ids) for ids in tokens["input_ids"]])  # token by token
    chunks = datasets.load_from_disk(root / "data/chunks")["validation"].with_format("numpy")[:]
    rows = {f: list(csv.DictReader(open(root / "metrics" / f))) for f in ("blocks.csv", "blocks_base.csv")}
    assert [(r["doc"], r["pos"]) for r in rows["blocks.csv"]] == [(r["doc"], r["pos"]) for r in rows["blocks_base.csv"]]
    doc, pos = (np.array([int(r[c]) for r in rows["blocks.csv"]]) for c in ("doc", "pos"))
    assert pos.tolist() == chunks["pos"].tolist() == list(range(len(pos)))  # max_validation_blocks: 0 keeps all
    block = chunks["input_ids"].shape[1]
    for i, p in enumerate(pos):  # each row's block is that stretch of the stream, its first token that document's
        np.testing.assert_array_equal(chunks["input_ids"][i], stream[p * block:(p + 1) * block])
        assert doc[i] == token_doc[p * block]
    n_docs = len(set(doc.tolist()))
    assert n_docs >= 4  # the fixture's validation lines (each a document of the text builder) own blocks
    out = tiny_repro.run("python", "-m", "lmtune.cli.compare", "--out", str(tmp_path)).stdout
    assert f"document bootstrap ({n_docs} documents, each resampled whole)" in out, out


def test_repro_again_is_a_noop(tiny_repro):
    out = tiny_repro.dvc("status").stdout
    assert "up to date" in out, out


def test_generate_command_and_report(tiny_repro):
    repo = tiny_repro
    args = ("python", "-m", "lmtune.cli.generate", "--prompt", "The Union is", "--max-new-tokens", "5")
    out = repo.run(*args).stdout
    for name in ("greedy", "temperature", "top_k", "top_p"):
        assert f"[{name}] The Union is" in out, out
    assert repo.run(*args).stdout == out  # seeded: sampling strategies repeat exactly
    one = repo.run(*args, "--strategy", "top_k", "--top-k", "3").stdout
    assert one.startswith("[top_k]") and "[greedy]" not in one
    report = repo.run("python", "-m", "lmtune.cli.report").stdout
    assert "base" in report and "tuned" in report and "models/export" in report


def test_tokenize_param_change_reruns_from_tokenize(tiny_repro, tmp_path):
    repo = copy_repo(tiny_repro, tmp_path / "repo")
    params = repo.params
    params["tokenize"]["eos_between_documents"] = False
    repo.set_params(params)
    changed = set(json.loads(repo.dvc("status", "--json").stdout))
    # export records every params section in the model card; chunk..evaluate follow via their data deps.
    assert changed == {"tokenize", "export"}, changed


# A train.* experiment reruns train, evaluate and export only: tests/test_experiments.py.
