"""`make gpu-check` on a machine without CUDA: one line, exit code 2, nothing written; and the probe the
check relies on to tell where a stage's layers ran (run here on CPU under bf16 autocast and without)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from bench import gpu_common
from bench.gpu_pipeline import _ran_on
from conftest import ROOT, VENV_BIN

# No CUDA whatever the machine has, and the CPU debug switch off.
NO_CUDA = {k: v for k, v in os.environ.items() if k != "LMTUNE_GPU_CHECK_ON_CPU"} | {"CUDA_VISIBLE_DEVICES": ""}


def _refusal(proc, out):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("gpu-check: no CUDA GPU here"), proc.stderr
    assert "nothing was run" in lines[0]
    assert not out.exists()


def test_without_cuda_it_refuses_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "GPU_RESULTS.md"
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(out)], cwd=ROOT, env=NO_CUDA,
                          text=True, capture_output=True, timeout=120)
    _refusal(proc, out)
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1


def test_make_gpu_check_runs_the_script(tmp_path):
    # -o install: the venv is already there (make test built it); only the target's own recipe runs.
    out = tmp_path / "GPU_RESULTS.md"
    env = NO_CUDA | {"PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["make", "-s", "-o", "install", "gpu-check", f"BIN={VENV_BIN}", f"ARGS=--out {out}"], cwd=ROOT, env=env,
                          text=True, capture_output=True, timeout=120)
    assert proc.returncode != 0
    assert "gpu-check: no CUDA GPU here" in proc.stderr
    assert not out.exists()


PROBED = textwrap.dedent("""
    import sys
    import torch
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4))
    ids = torch.tensor([[1, 2, 3]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids)
    model(ids)
    sys.exit(int(sys.argv[1]))
""")


@pytest.mark.parametrize("exit_code", [0, 2])
def test_probe_records_device_weights_and_autocast_of_every_layer(tmp_path, exit_code):
    """bench/gpu_probe.py runs a module as `python -m` would, and writes its record even when the module
    exits non-zero (a stage's UserError)."""
    (tmp_path / "probed_mod.py").write_text(PROBED)
    record = tmp_path / "probe.json"
    env = os.environ | {"LMTUNE_GPU_PROBE": str(record),
                        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_probe", "probed_mod", str(exit_code)], cwd=tmp_path,
                          env=env, text=True, capture_output=True, timeout=120)
    assert proc.returncode == exit_code, proc.stderr
    probe = json.loads(record.read_text())
    # Embedding + Linear once under bf16 autocast and once without; the Sequential owns no weights.
    assert sorted(map(tuple, probe["forwards"]), key=str) == sorted(
        [("cpu", "float32", "bfloat16", 2), ("cpu", "float32", None, 2)], key=str)
    assert _ran_on(probe, "cpu", None, check_cast=False)
    assert not _ran_on(probe, "cpu", "bfloat16")  # one call ran outside autocast
    assert not _ran_on(probe, "cuda", None, check_cast=False)


def test_no_forward_seen_is_not_a_pass():
    assert not _ran_on({"forwards": []}, "cpu", None)
    assert not _ran_on(None, "cpu", None)


def test_flops_per_token_counts_gpt2_124m_as_stated():
    """The formula's parameter count is the model's: GPT-2 124M built from config on the meta device."""
    import torch
    import transformers

    s = gpu_common.GPU
    cfg = transformers.GPT2Config(vocab_size=s.vocab, n_positions=s.positions, n_embd=s.embd, n_layer=s.layers,
                                  n_head=s.heads)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    n = sum(p.numel() for p in model.parameters())  # tied lm_head counted once
    wpe = model.transformer.wpe.weight.numel()
    assert (s.layers, s.embd, s.heads, s.vocab, s.positions, s.batch, s.seq) == (12, 768, 12, 50257, 1024, 8, 1024)
    assert n - wpe == 123_653_376  # bench/gpu_check.py's docstring arithmetic
    assert gpu_common.flops_per_token(n, wpe, s.layers, s.embd, s.seq) == 6 * 123_653_376 + 12 * 12 * 768 * 1024


def test_cuda_paths_memory_check_bounds():
    """The preflight check: estimate within ±25% of the measured peak, and peak ≤ limit ≤ device total."""
    from types import SimpleNamespace as Plan

    from bench.gpu_cuda_paths import memory_check

    assert memory_check(Plan(estimate_mb=120, limit_mb=1000), 100, "x", 2000)["ok"]
    assert memory_check(Plan(estimate_mb=76, limit_mb=None), 100, "x", None)["ok"]
    assert not memory_check(Plan(estimate_mb=130, limit_mb=1000), 100, "x", 2000)["ok"]   # +30%
    assert not memory_check(Plan(estimate_mb=70, limit_mb=1000), 100, "x", 2000)["ok"]    # -30%
    assert not memory_check(Plan(estimate_mb=100, limit_mb=90), 100, "x", 2000)["ok"]     # limit under the peak
    assert not memory_check(Plan(estimate_mb=100, limit_mb=3000), 100, "x", 2000)["ok"]   # limit above the GPU


def test_cuda_paths_arguments_check_wants_the_real_class_in_bf16():
    import transformers

    from bench.gpu_cuda_paths import arguments_check

    def args(**kw):
        return transformers.TrainingArguments(output_dir="unused", use_cpu=True, report_to="none", **kw)

    assert arguments_check(args(bf16=True), "cpu")["ok"]
    assert not arguments_check(args(bf16=False), "cpu")["ok"]
    assert not arguments_check(args(bf16=True), "cuda")["ok"]  # built for the CPU

    class Stub(transformers.TrainingArguments):  # what the unit tests put in the real class's place
        pass

    assert not arguments_check(Stub(output_dir="unused", use_cpu=True, report_to="none", bf16=True), "cpu")["ok"]


def test_run_module_reports_exit_skip_and_timeout():
    """bench.gpu_common.run_module: every section's child process, never raising for the child's failure."""
    budget = gpu_common.Budget(600)
    rc, out, err = gpu_common.run_module(budget, 60, ["json.tool", "--no-such-flag"], dict(os.environ))
    assert rc == 2 and "--no-such-flag" in err  # argparse's usage error, the child's own exit code
    rc, out, err = gpu_common.run_module(budget, 1, ["timeit", "-n1", "-r1", "import time; time.sleep(30)"],
                                         dict(os.environ))
    assert (rc, err) == ("timeout", "killed after 1 s")
    spent = gpu_common.Budget(10)  # under 15 s left: nothing is started
    assert gpu_common.run_module(spent, 60, ["this"], dict(os.environ)) == ("skipped", "", gpu_common.SKIPPED)


def test_in_worker_turns_a_failed_worker_into_an_error_row_and_a_problem(tmp_path, monkeypatch):
    """A worker that exits non-zero (here: bench.gpu_check refusing a machine without CUDA, exit 2) is a row's
    error and one line in the problems, not an exception that would end the section."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("LMTUNE_GPU_CHECK_ON_CPU", raising=False)
    rep = gpu_common.Report(tmp_path / "GPU_RESULTS.md")
    r = gpu_common.in_worker(rep, "evaluate throughput", gpu_common.Budget(600), 120, "eval")
    assert r["error"].startswith("exit 2: gpu-check: no CUDA GPU here"), r
    assert rep.problems == [f"evaluate throughput: {r['error'][:300]}"]


def test_defaults_section_puts_the_mfu_table_or_one_problem_in_the_report(tmp_path, monkeypatch):
    """gpu_check's `defaults` section (bench.gpu_mfu.defaults_section): the child's table in the report; a
    child that fails is one line in the problems and no table."""
    from bench import gpu_mfu

    table = ["| default params as resolved | precision |", "|---|---|", "| for a 35-step run | bf16 |", '{"lines": 3}']
    monkeypatch.setattr(gpu_common, "run_module", lambda *a, **k: (0, "\n".join(table) + "\n", ""))
    rep = gpu_common.Report(tmp_path / "GPU_RESULTS.md")
    gpu_mfu.defaults_section(rep, gpu_common.Budget(600))
    assert rep.problems == [] and rep.sections["defaults"].endswith("\n".join(table[:-1]))
    monkeypatch.setattr(gpu_common, "run_module", lambda *a, **k: ("timeout", "", "killed after 240 s"))
    rep = gpu_common.Report(tmp_path / "GPU_RESULTS2.md")
    gpu_mfu.defaults_section(rep, gpu_common.Budget(600))
    assert rep.problems == ["default params: killed after 240 s"] and "defaults" not in rep.sections
