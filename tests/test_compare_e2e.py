"""compare on the tiny pipeline: `make sweep` queues two learning rates and runs the queue (2 at a time), `make compare`
reads every run back; the report and the plain `dvc plots diff` page render in headless Chromium with
the network blocked."""
import json
import re
import sys
import xml.etree.ElementTree as ET

import pytest

import browser
from conftest import VENV_BIN
from repo_tools import copy_repo
from test_compare import assert_png, external_references

pytestmark = pytest.mark.slow

LRS = ("3e-3", "1e-4")   # around the tiny run's 1e-3
FILES = ("compare.html", "compare.txt", "compare.json")
CHARTS = ("loss", "eval_loss", "forest", "sweep")


@pytest.fixture(scope="module")
def swept(tiny_repro, tmp_path_factory):
    # A copy of the shared tiny run with eval_steps: the runs also log eval loss curves, which the report
    # overlays too. `dvc repro` then reruns only what eval_steps reaches (train, evaluate, export); the data
    # stages and the base model's evaluation and samples are the shared run's, as DVC would keep them.
    repo = copy_repo(tiny_repro, tmp_path_factory.mktemp("compare") / "repo")
    repo.set_params({"train": {"eval_steps": 4}})
    repo.run(sys.executable, "-m", "lmtune.cli.plots_template")  # what `make install` does
    ran = repo.dvc("repro").stdout
    assert "Running stage 'train'" in ran and "Running stage 'chunk'" not in ran, ran[-3000:]
    repo.commit("tiny run")

    def make(*args):  # the Makefile's own targets, with this venv (`-o install`: nothing to install)
        return repo.run("make", "-o", "install", f"BIN={VENV_BIN}", *args)

    make("sweep", f"VALUES={','.join(LRS)}", "JOBS=2")  # the queue's two runs side by side: 29 s against 50 s
    out = make("compare").stdout
    first = {f: (repo.path / "reports" / f).read_bytes() for f in FILES}
    return repo, out, first


def runs_of(repo) -> dict[str, dict]:
    """Every run DVC knows (HEAD and its experiments): name -> rev, learning rate, eval.json at that rev."""
    rows = json.loads(repo.dvc("exp", "show", "--json").stdout)
    head = next(r for r in rows if r["rev"] != "workspace")
    found = {head["name"] or head["rev"][:7]: head["rev"]}
    found.update({e["name"]: e["revs"][0]["rev"] for e in head["experiments"] or []})
    out = {}
    for name, rev in found.items():
        params = json.loads(repo.dvc("params", "diff", "--json", "--all", rev, rev).stdout or "{}")
        ev = json.loads(repo.run("git", "show", f"{rev}:metrics/eval.json").stdout)
        lr = repo.run("git", "show", f"{rev}:params.yaml").stdout
        out[name] = {"rev": rev, "eval": ev, "lr": float(re.search(r"learning_rate: (\S+)", lr).group(1)), "params": params}
    return out


def table_lines(out: str, names) -> dict[str, str]:
    return {n: next(line for line in out.splitlines() if re.match(rf"^[* ]\s+{re.escape(n)}\s", line)) for n in names}


def test_table_lists_each_run_its_changed_param_and_its_numbers(swept):
    from lmtune.report.formats import fmt_metric, fmt_param

    repo, out, first = swept
    runs = runs_of(repo)
    assert len(runs) == 3 and sorted(r["lr"] for r in runs.values()) == sorted([1e-3, *map(float, LRS)])
    text = first["compare.txt"].decode()
    assert text in out and max(map(len, text.splitlines())) <= 100, (text, out)
    header = text.splitlines()[2]
    assert "learning_rate" in header and "perplexity [95% CI]" in header
    assert "batch_size" not in header  # only the params that differ
    lines = table_lines(out, runs)
    for name, run in runs.items():
        line = lines[name]
        tuned, base = run["eval"]["tuned"], run["eval"]["base"]
        assert fmt_metric(tuned["perplexity"], "perplexity") in line, (name, line)
        assert fmt_param(run["lr"]) in line
        assert f"{(tuned['perplexity'] / base['perplexity'] - 1) * 100:+.1f}%" in line
        assert f"{tuned['accuracy']:.3f}" in line
        assert re.search(r"\[[\d.]+, [\d.]+\]", line), line  # its 95% interval, from metrics/blocks.csv
    best = min(runs, key=lambda n: runs[n]["eval"]["tuned"]["perplexity"])
    assert lines[best].startswith("*") and lines[best].rstrip().endswith("best")
    for name in set(runs) - {best}:
        assert not lines[name].startswith("*")
        assert lines[name].rstrip().endswith(("worse", "within noise", "better")), lines[name]
    assert "eval sample (paired blocks)" in out  # which noise the verdicts cover
    assert "left out: workspace: same params and metrics as" in out


def test_report_json_holds_the_numbers_of_each_eval_json(swept):
    repo, _, first = swept
    runs = runs_of(repo)
    report = json.loads(first["compare.json"])
    assert report["ranked_by"] == "perplexity" and report["changed_params"] == ["train.learning_rate"]
    got = {row["name"]: row for row in report["rows"]}
    assert set(got) == set(runs)
    for name, run in runs.items():
        assert got[name]["value"] == run["eval"]["tuned"]["perplexity"]
        assert got[name]["runs"][0]["rev"] == run["rev"]
        assert got[name]["low"] < got[name]["value"] < got[name]["high"]
    values = [row["value"] for row in report["rows"]]
    assert values == sorted(values) and report["rows"][0]["verdict"] == "best"


def test_report_files_are_offline_and_decode(swept):
    repo, _, first = swept
    reports = repo.path / "reports"
    html = first["compare.html"].decode()
    assert external_references(html) == []
    assert "<table>" in html and html.count('class="chart"') == len(CHARTS)
    for name in CHARTS:
        assert_png(reports / f"{name}.png")
        assert ET.parse(reports / f"{name}.svg").getroot().tag.endswith("svg")
    assert "reports/" in (repo.path / ".gitignore").read_text()
    assert repo.run("git", "status", "--porcelain", "reports").stdout == ""  # git-ignored


def test_same_runs_same_report_bytes(swept):
    repo, _, first = swept
    repo.run(sys.executable, "-m", "lmtune.cli.compare")
    for f in FILES:
        assert (repo.path / "reports" / f).read_bytes() == first[f], f


def test_compare_html_renders_offline_in_chromium(swept, tmp_path):
    repo, _, _ = swept
    page = repo.path / "reports/compare.html"
    pixels, messages = browser.screenshot(page, tmp_path)
    assert browser.page_errors(messages) == [], messages
    non_white, coloured = browser.shares(pixels)
    # Measured here: 4.8% non-white, 0.37% coloured (curves, forest points and intervals, sweep) at 1280x1600.
    assert non_white > 0.03 and coloured > 0.002, (non_white, coloured)
    dom, _ = browser.dom(page, tmp_path)
    for name in CHARTS:  # every chart div holds an SVG that vega drew marks into
        div = re.search(rf'<div id="chart-{name}"[^>]*>(.*?)</svg>', dom, re.S)
        assert div and len(re.findall(r'class="mark-', div.group(1))) >= 2, name


def only_charts(page_html: str, keep: set[str]) -> str:
    """compare.html with only the `keep` charts (their divs stay; the others get no spec to draw)."""
    start = page_html.index("const specs = ") + len("const specs = ")
    end = page_html.index(";\nfor (const", start)
    specs = {k: v for k, v in json.loads(page_html[start:end].replace("<\\/", "</")).items() if k in keep}
    return page_html[:start] + json.dumps(specs).replace("</", "<\\/") + page_html[end:]


def test_chromium_draws_the_forest_plot(swept, tmp_path):
    """The forest plot alone draws coloured marks (its points and intervals); the page without it, none."""
    repo, _, first = swept
    page_html = first["compare.html"].decode()
    shares = {}
    for name, keep in (("forest", {"forest"}), ("none", set())):
        page = tmp_path / f"{name}.html"
        page.write_text(only_charts(page_html, keep))
        pixels, messages = browser.screenshot(page, tmp_path)
        assert browser.page_errors(messages) == [], messages
        shares[name] = browser.shares(pixels)
    # Measured: the forest plot (3 runs) adds ~0.6% non-white pixels (axes, grid, labels) and ~0.01-0.06%
    # coloured ones (the non-best points and intervals); the page without charts has no coloured pixel.
    (forest_ink, forest_colour), (none_ink, none_colour) = shares["forest"], shares["none"]
    assert none_colour == 0.0 and forest_colour > 0.00005 and forest_ink - none_ink > 0.003, shares
    dom, _ = browser.dom(tmp_path / "forest.html", tmp_path)
    div = re.search(r'<div id="chart-forest"[^>]*>(.*?)</svg>', dom, re.S).group(1)
    assert len(re.findall(r'<path[^>]*aria-roledescription="point"', div)) == 3, div[:2000]
    assert "change in perplexity" in div


def test_dvc_plots_diff_page_renders_offline_in_chromium(swept, tmp_path):
    repo, _, _ = swept
    runs = runs_of(repo)
    repo.dvc("plots", "diff", *runs, "-o", str(tmp_path / "plots"))  # HEAD's branch and the experiments
    page = tmp_path / "plots/index.html"
    html = page.read_text()
    assert external_references(html) == [] and "cdn." not in html
    pixels, messages = browser.screenshot(page, tmp_path, size=(1280, 1200))
    assert browser.page_errors(messages) == [], messages
    non_white, coloured = browser.shares(pixels)
    # Measured here: 6.0% non-white, 1.0% coloured (one line per run in each curve plot) at 1280x1200.
    assert non_white > 0.03 and coloured > 0.005, (non_white, coloured)
    dom, _ = browser.dom(page, tmp_path)
    # DVC's divs, after vegaEmbed ran: each curve plot holds an SVG with one drawn line per run.
    drawn = {i: len(re.findall(r'class="mark-line', body))
             for i, body in re.findall(r'<div id="(\w+)" class="vega-embed[^"]*">(.*?)</details>', dom, re.S)}
    for curve in ("loss", "eval_loss", "learning_rate", "grad_norm"):
        assert drawn.get(f"metrics_train_plots_metrics_{curve}_tsv", 0) >= 1, (curve, drawn)


def test_dvc_default_page_is_blank_offline(tmp_path):
    """The checks above can fail: DVC's own page (vega from a CDN) draws nothing with the network blocked."""
    from dvc_render.html import HTML
    from dvc_render.vega import VegaRenderer

    points = [{"step": s, "loss": 3 - s / 10} for s in range(10)]
    renderer = VegaRenderer(points, "loss.tsv", x="step", y="loss")
    page = tmp_path / "dvc_default.html"
    div = renderer.DIV.format(id="plot", partial=renderer.partial_html())
    page.write_text(HTML().with_scripts(renderer.SCRIPTS).with_element(div).embed())
    pixels, messages = browser.screenshot(page, tmp_path, size=(800, 600))
    assert browser.shares(pixels)[1] == 0.0
    assert any("vegaEmbed is not defined" in m for m in browser.page_errors(messages)), messages


def test_named_experiments_only(swept, tmp_path):
    repo, _, _ = swept
    exps = [n for n, r in runs_of(repo).items() if r["lr"] != 1e-3]
    out = repo.run(sys.executable, "-m", "lmtune.cli.compare", *exps, "--out", str(tmp_path)).stdout
    report = json.loads((tmp_path / "compare.json").read_text())
    assert sorted(row["name"] for row in report["rows"]) == sorted(exps)
    assert set(table_lines(out, exps)) == set(exps)
    bad = repo.run(sys.executable, "-m", "lmtune.cli.compare", "no-such-exp", check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: compare: no run 'no-such-exp'"), bad.stderr


def test_a_run_of_only_train_is_left_out_saying_why(swept, tmp_path):
    """`dvc exp run -s train` commits the parent's metrics/eval.json beside a new model: dvc.lock shows it.
    (Last in this file: it adds an experiment the tests above do not expect.)"""
    repo, _, _ = swept
    # 3e-3 as in the sweep: DVC's run-cache restores that model instead of training again (seconds).
    repo.dvc("exp", "run", "-s", "train", "-S", f"train.learning_rate={LRS[0]}", "-n", "train-only")
    out = repo.run(sys.executable, "-m", "lmtune.cli.compare", "--out", str(tmp_path)).stdout
    assert "left out: train-only: metrics/eval.json is not from its own model: dvc.lock's evaluate read" in out.replace("\n  ", " ")
    report = json.loads((tmp_path / "compare.json").read_text())
    assert "train-only" not in {row["name"] for row in report["rows"]} and len(report["rows"]) == 3
