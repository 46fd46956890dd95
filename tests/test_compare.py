"""compare (lmtune/report: runs, analysis, table, charts, page) on hand-made runs: the table, ranking, seed groups, tokenizers, determinism, exp show parsing.

The tiny-pipeline end-to-end run (real `dvc exp run`s, the browser) is tests/test_compare_e2e.py.
"""
import copy
import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from lmtune.report import analysis, charts
from lmtune.report.formats import fmt_metric, fmt_param
from lmtune.report.page import page as render_page
from lmtune.report.page import write_reports
from lmtune.report.runs import Run, UserError, parse_blocks, runs_from_exp_show, select
from lmtune.report.table import render_text

LR = "train.learning_rate"


def lm_run(name, lr=1e-4, seed=42, nll=None, tokens=None, nbytes=None, base_nll=None, task="causal_lm", **params):
    """A run whose eval.json numbers are exactly those of its per-block columns (as evaluate writes them)."""
    n = len(nll)
    tokens = np.full(n, 63.0) if tokens is None else np.asarray(tokens, float)
    nbytes = np.full(n, 250.0) if nbytes is None else np.asarray(nbytes, float)
    base_nll = np.asarray(nll) * 1.1 if base_nll is None else np.asarray(base_nll, float)
    blocks = {"block": np.arange(n, dtype=float), "n_tokens": tokens, "n_bytes": nbytes,
              "base_nll": base_nll, "tuned_nll": np.asarray(nll, float)}

    def side(s):
        return {"loss": s.sum() / tokens.sum(), "perplexity": math.exp(s.sum() / tokens.sum()), "accuracy": 0.3,
                "n_tokens": int(tokens.sum()), "n_bytes": int(nbytes.sum()),
                "bits_per_byte": s.sum() / math.log(2) / nbytes.sum()}

    p = {"seed": seed, "task": task, LR: lr, "train.batch_size": 4, **params}
    return Run(name, f"{abs(hash(name)):040x}"[:40], p, {"base": side(base_nll), "tuned": side(blocks["tuned_nll"])},
                       {"wall_time_s": 12.5, "tokens_per_second": 600.0}, "base-hash", blocks)


def nll(seed=0, n=32, scale=1.0):
    rng = np.random.default_rng(seed)
    return rng.normal(3.3, 0.4, n) * 63 * scale


def sweep():
    base = nll(0)
    jitter = np.random.default_rng(1).normal(0, 4, 32)  # per block ~1.9% of a block's NLL, summing to 0
    return [lm_run("exp-low", 1e-5, nll=base * 1.05),            # every block worse than the best
            lm_run("main", 1e-4, nll=base),                       # the best
            lm_run("exp-high", 1e-3, nll=base * 1.0005 + jitter - jitter.mean())]  # 0.05% worse: noise


def test_table_lists_runs_params_numbers_and_marks_the_best():
    runs = sweep()
    report = analysis.analyse(runs)
    text = render_text(report, 100)
    assert report.params == [LR] and report.key == "perplexity"
    assert [r.name for r in report.rows][0] == "main"
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line for line in text.splitlines()
             if line.lstrip("* ").split(" ")[0] in {"main", "exp-low", "exp-high"}}
    assert lines["main"].startswith("*") and lines["main"].rstrip().endswith("best")
    assert lines["exp-low"].rstrip().endswith("worse")
    assert lines["exp-high"].rstrip().endswith("within noise")
    for r in runs:
        line = lines[r.name]
        assert fmt_metric(r.eval["tuned"]["perplexity"], "perplexity") in line
        assert fmt_param(r.params[LR]) in line
        vs = (r.eval["tuned"]["perplexity"] / r.eval["base"]["perplexity"] - 1) * 100
        assert f"{vs:+.1f}%" in line
    assert "learning_rate" in text and "batch_size" not in text  # only the params that differ
    assert "perplexity [95% CI]" in text and "paired" in text and "eval sample" in text


def test_interval_brackets_the_value_in_the_table():
    report = analysis.analyse(sweep())
    for row in report.rows:
        assert row.low < row.value < row.high


@pytest.mark.parametrize("width", [80, 100])
def test_table_fits_the_width(width):
    runs = sweep()
    for r in runs:  # more changed params than fit in 80 columns
        r.params.update({"train.warmup_ratio": hash(r.name) % 7 / 100, "lora.enabled": r.name == "main",
                         "model.name": f"gpt2-{r.name}"})
    text = render_text(analysis.analyse(runs), width)
    assert max(len(line) for line in text.splitlines()) <= width, text
    for r in runs:
        assert r.name in text and fmt_metric(r.eval["tuned"]["perplexity"], "perplexity") in text
        assert f"gpt2-{r.name}" in text  # the changed params are still shown (under the table if need be)


def test_two_tokenizers_are_ranked_by_bits_per_byte():
    text_nll = nll(3)
    # Tokenizer A cuts the same text into twice as many tokens, each easier: lower perplexity per token,
    # but more bits per byte in total. Tokenizer B is the better model of the text.
    a = lm_run("tok-a", nll=text_nll * 1.2, tokens=np.full(32, 126.0), nbytes=np.full(32, 250.0), **{"model.name": "a"})
    b = lm_run("tok-b", nll=text_nll, tokens=np.full(32, 63.0), nbytes=np.full(32, 251.0), **{"model.name": "b"})
    assert a.eval["tuned"]["perplexity"] < b.eval["tuned"]["perplexity"]
    assert a.eval["tuned"]["bits_per_byte"] > b.eval["tuned"]["bits_per_byte"]
    report = analysis.analyse([a, b])
    assert report.key == "bits_per_byte" and [r.name for r in report.rows] == ["tok-b", "tok-a"]
    text = render_text(report)
    assert "ranked by bits per byte" in text.splitlines()[0] + text.splitlines()[1]
    assert "bits/byte [95% CI]" in text
    assert report.rows[1].vs_ref.paired is False and "unpaired" in report.rows[1].vs_ref.noise
    # Same tokens: perplexity again.
    c = lm_run("tok-b2", nll=text_nll * 1.01, tokens=np.full(32, 63.0), nbytes=np.full(32, 251.0), **{"model.name": "c"})
    assert analysis.analyse([b, c]).key == "perplexity"


def test_tokenizers_told_apart_from_eval_totals_without_blocks():
    a, b = lm_run("a", nll=nll(4), tokens=np.full(32, 126.0)), lm_run("b", nll=nll(4))
    a.blocks = b.blocks = None
    assert analysis.same_tokens([a, b]) is False
    report = analysis.analyse([a, b])
    assert report.key == "bits_per_byte" and all(r.low is None and r.verdict in ("best", "n/a") for r in report.rows)
    assert "no interval or verdict for a, b: no metrics/blocks.csv" in render_text(report)
    del a.eval["tuned"]["n_bytes"]
    assert analysis.same_tokens([a, b]) is None


def test_runs_differing_only_in_seed_are_one_row_with_mean_and_spread():
    base = nll(5)
    runs = [lm_run("s1", seed=1, nll=base), lm_run("s2", seed=2, nll=base * 1.02),
            lm_run("s3", seed=3, nll=base * 0.99), lm_run("other", 1e-3, seed=1, nll=base * 1.2)]
    report = analysis.analyse(runs)
    assert [len(r.runs) for r in report.rows] == [3, 1]
    group = report.rows[0]
    values = [r.eval["tuned"]["perplexity"] for r in runs[:3]]
    assert group.value == pytest.approx(np.mean(values)) and group.spread == pytest.approx(np.std(values, ddof=1))
    text = render_text(report)
    assert "s1 ×3" in text and f"{fmt_metric(group.value, 'perplexity')}±" in text
    assert "1,2,3" in text  # the group's seeds
    assert "differ only in seed" in text and "seeds (1 vs 3)" in text


def test_classification_ranks_by_accuracy():
    labels = np.array([0, 1, 2, 1] * 25, float)

    def clf(name, correct_share, lr):
        rng = np.random.default_rng(len(name))
        pred = np.where(rng.random(100) < correct_share, labels, (labels + 1) % 3)
        blocks = {"block": np.arange(100.0), "label": labels, "base_pred": (labels + 1) % 3, "tuned_pred": pred}
        acc = float((pred == labels).mean())
        ev = {"base": {"accuracy": 0.0, "macro_f1": 0.0}, "tuned": {"accuracy": acc, "macro_f1": acc - 0.01}}
        return Run(name, None, {"seed": 1, "task": "classification", LR: lr}, ev, {}, None, blocks)

    report = analysis.analyse([clf("weak", 0.5, 1e-5), clf("strong", 0.95, 1e-4)])
    assert report.key == "accuracy" and report.higher_is_better
    assert [r.name for r in report.rows] == ["strong", "weak"] and report.rows[1].verdict == "worse"
    text = render_text(report)
    assert "macro-F1" in text and "pp" in text


def test_same_seed_same_report_bytes():
    specs = lambda rep: {"forest": charts.forest_spec(rep), "sweep": charts.sweep_spec(rep)}  # noqa: E731
    outs = []
    for _ in range(2):
        report = analysis.analyse(copy.deepcopy(sweep()))
        outs.append((render_text(report), json.dumps(analysis.report_json(report), sort_keys=True),
                     render_page(report, specs(report))))
    assert outs[0] == outs[1]
    other = analysis.analyse(copy.deepcopy(sweep()), seed=1)
    assert analysis.report_json(other)["rows"][1]["low"] != json.loads(outs[0][1])["rows"][1]["low"]


def test_page_is_self_contained(tmp_path):
    report = analysis.analyse(sweep())
    page = render_page(report, {"forest": charts.forest_spec(report), "sweep": charts.sweep_spec(report)})
    assert external_references(page) == []
    assert "window.vegaEmbed" in page and page.count("<script>") == 2


def test_charts_render_to_png_and_svg(tmp_path):
    report = analysis.analyse(sweep())
    specs = {"forest": charts.forest_spec(report), "sweep": charts.sweep_spec(report)}
    report.notes = []
    write_reports(report, specs, render_text(report), tmp_path)
    for name in specs:
        assert_png(tmp_path / f"{name}.png")
        root = ET.parse(tmp_path / f"{name}.svg").getroot()
        assert root.tag.endswith("svg") and len(list(root.iter())) > 20
    assert json.loads((tmp_path / "compare.json").read_text())["ranked_by"] == "perplexity"


def test_sweep_chart_only_for_three_or_more_runs():
    report = analysis.analyse(sweep()[:2])
    assert charts.sweep_spec(report) is None
    panel = charts.sweep_spec(analysis.analyse(sweep()))["hconcat"][0]
    assert {layer["mark"]["type"] for layer in panel["layer"]} == {"line", "rule", "point"}
    assert panel["layer"][0]["encoding"]["x"]["scale"]["type"] == "log"  # 1e-5 .. 1e-3
    assert sorted(v["x"] for v in panel["data"]["values"]) == [1e-5, 1e-4, 1e-3]


# ---- dvc exp show --json parsing ----------------------------------------------------------------

def exp_entry(rev, name, lr, ppl, state=None):
    data = {"rev": rev, "params": {"params.yaml": {"data": {"seed": 42, "task": "causal_lm", "train": {"learning_rate": lr}}}},
            "metrics": {"metrics/eval.json": {"data": {"base": {"perplexity": 50.0}, "tuned": {"perplexity": ppl}}},
                        "metrics/train_timing.json": {"data": {"wall_time_s": 3.0, "tokens_per_second": 500.0}}},
            "deps": {"models/base": {"hash": "abc.dir"}}}
    return {"rev": rev, "name": name, "data": data, "error": None, "experiments": None}


def test_runs_from_exp_show():
    head = exp_entry("a" * 40, "main", 1e-4, 30.0)
    head["experiments"] = [
        {"name": "exp-1", "executor": {"state": "success"}, "revs": [exp_entry("b" * 40, "exp-1", 3e-4, 28.0)]},
        {"name": "exp-2", "executor": {"state": "failed"}, "revs": [exp_entry("c" * 40, "exp-2", 1e-3, 99.0)]},
    ]
    queued = {"name": "exp-3", "executor": {"state": "queued"}, "revs": [exp_entry("d" * 40, "exp-3", 1e-5, 0)]}
    queued["revs"][0]["data"]["metrics"] = {}
    head["experiments"].append(queued)
    workspace = exp_entry("workspace", None, 3e-4, 28.0)  # the workspace after `dvc exp run` = exp-1
    runs, skipped = runs_from_exp_show([workspace, head])
    assert [r.name for r in runs] == ["main", "exp-1"]
    assert runs[1].params[LR] == 3e-4 and runs[1].eval["tuned"]["perplexity"] == 28.0
    assert runs[1].rev == "b" * 40 and runs[0].base_model == "abc.dir"
    assert any(s.startswith("exp-2: failed") for s in skipped)
    assert any(s.startswith("exp-3: queued") for s in skipped)
    assert any(s.startswith("workspace: same params and metrics as exp-1") for s in skipped)
    assert [r.name for r in select(runs, ["exp-1", "aaaa"])] == ["exp-1", "main"]
    with pytest.raises(UserError, match="no run 'nope'"):
        select(runs, ["nope"])


def test_blocks_csv_parses_to_columns():
    cols = parse_blocks("block,n_tokens,n_bytes,base_nll,tuned_nll\n0,63,250,220.5,200.25\n1,63,260,230,210\n")
    assert cols["n_bytes"].tolist() == [250, 260] and cols["tuned_nll"].tolist() == [200.25, 210]
    run = Run("r", None, {"task": "causal_lm"}, {}, blocks=cols)
    assert analysis.ratio(run, "perplexity").value() == pytest.approx(math.exp(410.25 / 126))
    assert analysis.ratio(run, "bits_per_byte").value() == pytest.approx(410.25 / math.log(2) / 510)


# ---- helpers shared with the end-to-end test ----------------------------------------------------

def assert_png(path):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.width > 100 and im.height > 100


def external_references(page: str) -> list[str]:
    """src/href attributes and CSS url()/@import that point anywhere but inside the page."""
    import re
    from html.parser import HTMLParser

    found = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            for k, v in attrs:
                if k in ("src", "href", "srcset", "data", "poster", "action") and v and not v.startswith(("#", "data:")):
                    found.append(f"<{tag} {k}={v}>")

    P().feed(page)
    for style in re.findall(r"<style[^>]*>(.*?)</style>", page, re.S):
        found += re.findall(r"(?:url\(|@import)\s*['\"]?(?!data:)[^'\")]*", style)
    return found


def test_blocks_that_do_not_match_eval_json_are_flagged():
    runs = sweep()
    runs[0].blocks["tuned_nll"] = runs[0].blocks["tuned_nll"] * 1.01
    text = render_text(analysis.analyse(runs))
    assert "warning: exp-low: metrics/blocks.csv gives perplexity" in text
    assert "warning" not in render_text(analysis.analyse(sweep()))


# ---- verdicts that hold up (issue 22): reference, selection, detectable change, groups, stale runs ------

def test_verdicts_against_the_best_are_corrected_for_picking_it():
    report = analysis.analyse(sweep())
    levels = [r.vs_ref.level for r in report.rows if r.vs_ref]
    assert levels == pytest.approx([1 - 0.05 / 2] * 2)  # Bonferroni over the 2 comparisons with the picked best
    assert "Bonferroni over 2" in render_text(report)
    two = analysis.analyse(sweep()[:2])
    assert {r.vs_ref.level for r in two.rows if r.vs_ref} == {0.95}


def test_against_names_the_baseline_of_every_verdict():
    report = analysis.analyse(sweep(), against="exp-high")
    verdicts = {r.name: r.verdict for r in report.rows}
    assert verdicts == {"exp-high": "reference", "main": "within noise", "exp-low": "worse"}
    assert report.rows[0].name == "main" and {r.vs_ref.level for r in report.rows if r.vs_ref} == {0.95}
    text = render_text(report)
    assert "verdicts vs exp-high (--against), at 95% each" in text
    assert text.splitlines()[4].startswith("*  main")  # still ranked, the best still starred
    with pytest.raises(UserError, match="--against 'nope'"):
        analysis.analyse(sweep(), against="nope")


def test_smallest_detectable_change_and_runs_closer_than_it():
    report = analysis.analyse(sweep())
    c = next(r.vs_ref for r in report.rows if r.name == "exp-high")
    assert report.detectable == pytest.approx(np.median(
        [analysis.detectable(r.vs_ref, False) for r in report.rows if r.vs_ref]))
    assert 0 < abs(c.rel) * 100 < report.detectable
    text = render_text(report)
    assert f"smallest detectable change: {report.detectable:.1f}% in perplexity on these 32 validation blocks" in text
    assert f"closer to main than that: exp-high ({c.rel * 100:+.1f}%)" in text
    assert "exp-low (" not in text.split("closer to main")[1]  # 5% worse on every block: called, not "close"


def test_repeats_are_not_called_seed_changes():
    base = nll(5)
    runs = [lm_run("r1", seed=1, nll=base), lm_run("r2", seed=1, nll=base * 1.001), lm_run("s3", seed=3, nll=base * 0.999)]
    text = render_text(analysis.analyse(runs[:2]))
    assert "r1, r2 repeats of one config (identical params, seed included)" in text and "differ only in seed" not in text
    text = render_text(analysis.analyse(runs))
    assert "r1, r2, s3 differ only in seed (1, 1, 3: some are repeats)" in text


def test_document_ids_order_the_units_and_choose_the_document_bootstrap():
    run = sweep()[1]
    n = len(run.blocks["tuned_nll"])
    doc, pos = np.repeat(np.arange(8), 4), np.tile(np.arange(4), 8)
    shuffle = np.random.default_rng(0).permutation(n)  # rows in any order: (doc, pos) restores the stream
    run.blocks = {k: v[shuffle] for k, v in {**run.blocks, "doc": doc.astype(float), "pos": pos.astype(float)}.items()}
    r = analysis.ratio(run, "perplexity")
    assert np.array_equal(r.doc[0], doc) and r.resampling().method == "documents"
    assert r.value() == pytest.approx(run.eval["tuned"]["perplexity"])
    report = analysis.analyse([run])
    assert "intervals: document bootstrap (8 documents, each resampled whole)" in render_text(report)
    without = analysis.analyse([sweep()[1]])
    assert "intervals: block bootstrap over stream order (11 runs of 3" in render_text(without)


def lock(train_out="aaa.dir", eval_reads="aaa.dir"):
    return {"stages": {
        "chunk": {"deps": [{"path": "data/tokens", "md5": "t.dir"}], "outs": [{"path": "data/chunks", "md5": "c.dir"}]},
        "train": {"deps": [{"path": "data/chunks", "md5": "c.dir"}], "outs": [{"path": "models/final", "md5": train_out}]},
        "evaluate": {"deps": [{"path": "data/chunks", "md5": "c.dir"}, {"path": "models/final", "md5": eval_reads}],
                     "outs": [{"path": "metrics/eval.json", "md5": "e"}, {"path": "metrics/blocks.csv", "md5": "b"}]},
        "export": {"deps": [{"path": "models/final", "md5": "old.dir"}], "outs": [{"path": "models/export", "md5": "x"}]},
    }}


def test_metrics_of_another_model_are_detected_from_dvc_lock():
    from lmtune.report.runs import stale_metrics

    assert stale_metrics(lock()) is None  # export being stale does not touch the metrics
    why = stale_metrics(lock(train_out="new.dir"))  # `dvc exp run -s train`: a new model, the parent's eval
    assert why.startswith("metrics/eval.json is not from its own model: dvc.lock's evaluate read models/final aaa.dir")
    assert "train wrote new.dir" in why and "-s train" in why
    upstream = lock()
    upstream["stages"]["chunk"]["outs"][0]["md5"] = "c2.dir"  # data re-chunked, train and evaluate not rerun
    assert "read data/chunks c.dir, but chunk wrote c2.dir" in stale_metrics(upstream)
    assert stale_metrics({}) is None and stale_metrics(None) is None


def test_forest_plot_shows_each_change_with_its_interval_on_a_zoomed_axis():
    report = analysis.analyse(sweep())
    spec = charts.forest_spec(report)
    points = {p["run"]: p for p in spec["data"]["values"]}
    assert set(points) == {"main", "exp-low", "exp-high"}
    for row in report.rows:
        p = points[row.name]
        assert p["low"] < p["change"] < p["high"] and p["change"] == pytest.approx(row.vs_base_cmp.rel * 100)
        assert p["change"] == pytest.approx(row.vs_base, abs=1e-9)
    lo, hi = spec["layer"][-1]["encoding"]["x"]["scale"]["domain"]
    assert lo <= min(p["low"] for p in points.values()) and hi >= max(p["high"] for p in points.values())
    assert hi < 0 and hi - lo < 10  # around -28%: zoomed in, not drawn from zero
    against = charts.forest_spec(analysis.analyse(sweep(), against="exp-high"))
    assert {p["run"]: p["change"] for p in against["data"]["values"]}["exp-high"] == 0.0
    assert against["layer"][0]["encoding"]["x"]["field"] == "zero"  # the reference line at 0


@pytest.mark.parametrize("lrs", [[5e-5, 1e-4, 1.5e-4, 2e-4, 3e-4], [1e-5, 5e-5, 1e-4, 1.5e-4, 1e-3]])
def test_sweep_axis_tells_close_values_apart(lrs):
    """The issue's sweep wrote 1.5e-4 as "0.0001" beside 1e-4, labels overlapping. Upright labels need a
    label's width between ticks; turned ones (the second sweep: 1e-4 and 1.5e-4 close on a 2-decade axis)
    their height, 10 px, plus a little."""
    import re

    import vl_convert as vlc

    base = nll(0)
    report = analysis.analyse([lm_run(f"lr{i}", lr, nll=base * (1 + i / 200)) for i, lr in enumerate(lrs)])
    assert charts.tick_format(lrs) == ".1~e" and charts.tick_format([1e-5, 1e-4, 1e-3]) == ".0~e"
    assert charts.tick_format([4, 8, 16]) == "~g" and charts.tick_format([0.05, 0.1]) == "~g"
    svg = vlc.vegalite_to_svg(charts.sweep_spec(report))
    # Axis labels: <text ... transform="translate(x,y) rotate(a)">label</text>, one per swept value.
    labels = re.findall(r'<text[^>]*transform="translate\(([\d.]+),[\d.]+\)(?: rotate\(([-\d.]+)\))?[^"]*"[^>]*>([^<]+)</text>', svg)
    ticks = {text: (float(x), angle) for x, angle, text in labels if re.fullmatch(r"[\d.]+e-\d", text)}
    assert set(ticks) == {f"{v:.1e}".replace(".0e", "e").replace("e-0", "e-") for v in lrs}, labels
    xs = sorted(x for x, _ in ticks.values())
    upright = all(not a or float(a) % 360 == 0 for _, a in ticks.values())
    need = 6 * len("1.5e-4") if upright else 13  # a label's width upright, its height turned
    assert min(b - a for a, b in zip(xs, xs[1:])) >= need, ticks


def test_harness_rows_appear_in_the_table_json_and_page():
    """metrics/harness.json of each run (read from `dvc exp show`) shows under compare's table, in compare.json
    and on the page: base and tuned per harness task with the harness's stderr, and its notes."""
    harness = {"lm_eval_version": "0.4.13", "settings": {"tasks": ["lmtune_heldout"], "limit": 1},
               "base": {"lmtune_heldout": {"metrics": {"bits_per_byte": {"value": 1.25, "stderr": None}}}},
               "tuned": {"lmtune_heldout": {"metrics": {"bits_per_byte": {"value": 1.125, "stderr": None}}}}}
    head, exp = exp_entry("a" * 40, "main", 1e-4, 30.0), exp_entry("b" * 40, "exp-1", 3e-4, 28.0)
    exp["data"]["metrics"]["metrics/harness.json"] = {"data": harness}
    head["experiments"] = [{"name": "exp-1", "executor": {"state": "success"}, "revs": [exp]}]
    runs, _ = runs_from_exp_show([head])
    assert runs[1].harness == harness and runs[0].harness is None
    report = analysis.analyse(runs)
    row = ["exp-1", "lmtune_heldout", "bits_per_byte", "1.25", "1.125", "-10.0%"]
    assert analysis.report_json(report)["harness"]["rows"] == [row]
    text = render_text(report)
    assert any(line.split() == row for line in text.splitlines()), text
    assert "harness: no stderr for bits_per_byte" in text and "harness: lm-eval 0.4.13" in text
    assert "<h2>lm-evaluation-harness</h2>" in render_page(report, {}) and "<td>-10.0%</td>" in render_page(report, {})
