"""`make gpu-check`'s tiny-pipeline section: every stage of dvc.yaml on the device, probed layer by layer."""
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench.gpu_common import ROOT, SHAPES, Budget, Report, _device, _env, _md, _tail, run_module
from bench.workspace import tiny_overrides
from lmtune.cli.recipe import deep_update


# bf16 keeps 8 significant bits, so under autocast each logit comes out rounded to within 2^-9 ≈ 0.2% of its
# size (matmuls accumulate in float32, and lmtune.eval.metrics computes the loss in float32 from those logits).
# The tiny model's logits are small: the output layer is the tied 0.02-std embedding against a layer-normed
# 64-wide state, std ≈ 0.02·√64 = 0.16, and 8 steps barely move it (its perplexity, ~4e4, is near-uniform
# over 50,257 tokens), so |z| < ~2. A token's NLL = logsumexp(z) − z_label then moves by ≤ 2 × 0.2% × 2 ≈
# 0.008 nats, and perplexity = exp(mean NLL) by ≤ 0.8% even if every token's error had the same sign;
# unrelated rounding errors mostly cancel over the ~1,500 validation tokens (the CPU debug run, bf16 autocast
# there too, gives ~1e-5). Asserted: 1%. A forward that escaped autocast would not show here (0 difference):
# bench/gpu_probe.py's per-layer record is the check for that.
PPL_BOUND = 0.01


def _copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("lmtune", "stages", "bench"):
        shutil.copytree(ROOT / d, dest / d, ignore=ignore)
    shutil.copytree(ROOT / "tests" / "fixtures" / "sotu_small", dest / "tests" / "fixtures" / "sotu_small")
    for f in ("params.yaml", "dvc.yaml"):
        shutil.copy2(ROOT / f, dest / f)


def _forwards(probe: dict | None) -> str:
    if not probe or not probe.get("forwards"):
        return "no layer forward seen"
    return ", ".join(f"{n}× {d} {w} weights, autocast {a or 'off'}" for d, w, a, n in probe["forwards"])


def _ran_on(probe: dict | None, dev: str, cast: str | None, check_cast: bool = True) -> bool:
    rows = (probe or {}).get("forwards") or []
    return bool(rows) and all(d == dev and (not check_cast or a == cast) for d, _, a, _ in rows)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _stage_tail(stage: str, rc: int | str, out: str, err: str) -> str:
    """A stage's own summary lines when it succeeded; the end of its traceback when not; why, when not run."""
    if isinstance(rc, str):
        return err
    said = [ln for ln in out.splitlines() if ln.startswith((f"{stage}:", "evaluate:"))]
    if rc == 0 and said:
        return _tail("\n".join(said), 3)
    return _tail(out + "\n" + err, 3 if rc == 0 else 8)


def _probe_name(label: str) -> str:
    return f"probe-{label.replace(' ', '_').replace('(', '').replace(')', '')}.json"


@dataclasses.dataclass
class Pipeline:
    """The tiny pipeline in a temp copy of the repo: its stages, their runs so far and the checks on them."""

    rep: Report
    budget: Budget
    tmp: Path
    modules: dict[str, str]          # stage -> the module its dvc.yaml `cmd` runs (`python -m stages.NAME`)
    params: dict                     # params.yaml as last written
    runs: list[dict] = dataclasses.field(default_factory=list)  # stage, label, rc, seconds, probe, tail
    checks: list[tuple[str, bool, str]] = dataclasses.field(default_factory=list)

    @property
    def repo(self) -> Path:
        return self.tmp / "repo"

    @property
    def stages(self) -> list[str]:
        return list(self.modules)

    @property
    def eval_stages(self) -> list[str]:
        return [s for s in self.stages if s.startswith("evaluate")]

    def set_precision(self, precision: str) -> None:
        """recipes/tiny.yaml at the width of the committed GPU run (64), with the precision under test."""
        import yaml

        base = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
        over = tiny_overrides({"model": {"gpt2": {"n_embd": 64}}, "train": {"precision": precision}})
        if "since_year" in base.get("data", {}):  # a sotu-only filter; the tiny recipe reads files
            over = deep_update(over, {"data": {"since_year": None}})
        self.params = deep_update(base, over)
        (self.repo / "params.yaml").write_text(yaml.safe_dump(self.params, sort_keys=False), encoding="utf-8")

    def run_stage(self, stage: str, label: str) -> dict:
        """`python -m stages.NAME` under bench/gpu_probe.py, within the time budget; a row of the table."""
        probe_file = self.tmp / _probe_name(label)
        env = _env({"LMTUNE_GPU_PROBE": str(probe_file), "HF_HOME": str(self.tmp / "hf")}, pythonpath=self.repo)
        start = time.perf_counter()
        rc, out, err = run_module(self.budget, SHAPES.stage_timeout_s, ["bench.gpu_probe", self.modules[stage]], env,
                                  cwd=self.repo)
        r = {"stage": stage, "label": label, "rc": rc, "seconds": time.perf_counter() - start,
             "probe": _read_json(probe_file) or None, "tail": _stage_tail(stage, rc, out, err)}
        self.runs.append(r)
        self.render()
        if r["rc"] != 0:
            self.rep.problem(f"pipeline stage {label}: {r['rc']}: {r['tail'][-300:]}")
        return r

    def render(self) -> None:
        lines = ["## Tiny pipeline on the device", "",
                 "dvc.yaml's stages, each as `python -m stages.NAME`, in a temp copy of the repo: recipes/tiny.yaml "
                 f"(GPT-2 from config, 2 layers) at 64 wide, `train.precision: {SHAPES.precision}` then `fp32` for "
                 "the second evaluation. Forwards: what bench/gpu_probe.py saw each layer call run with.", "",
                 "| stage | exit | seconds | forwards (count × device, weights, autocast) | CUDA peak MB | last output |",
                 "|---|---|---|---|---|---|"]
        for r in self.runs:
            lines.append(f"| {r['label']} | {r['rc']} | {r['seconds']:.1f} | {_md(_forwards(r['probe']))} | "
                         f"{(r['probe'] or {}).get('cuda_peak_mb', '')} | {_md(r['tail'])} |")
        if self.checks:
            lines += ["", "| check | result | detail |", "|---|---|---|"]
            lines += [f"| {_md(n)} | {'PASS' if ok else '**FAIL**'} | {_md(d)} |" for n, ok, d in self.checks]
        self.rep.set("pipeline", "\n".join(lines))


def _prepare(rep: Report, budget: Budget) -> Pipeline:
    import yaml

    tmp = Path(tempfile.mkdtemp(prefix="lmtune-gpu-check-"))
    _copy_repo(tmp / "repo")
    graph = yaml.safe_load((tmp / "repo" / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    # Every stage of dvc.yaml, in its (data-flow) order, each as its `cmd` runs it: `python -m stages.NAME`.
    modules = {name: st["cmd"].split(" -m ", 1)[1].split()[0] for name, st in graph.items()}
    pipe = Pipeline(rep, budget, tmp, modules, {})
    pipe.set_precision(SHAPES.precision)
    return pipe


def device_checks(pipe: Pipeline, first: dict, second: dict, dev: str, cast: str) -> None:
    """Where each model stage's layers ran: train and evaluation under autocast, generation on the device."""
    want = f"{dev}, autocast {cast}"
    probe = first["train"]["probe"]
    pipe.checks.append((f"train: layers ran on {want}", _ran_on(probe, dev, cast), _forwards(probe)))
    timing = _read_json(pipe.repo / "metrics" / "train_timing.json")
    pipe.checks.append(("train: metrics/train_timing.json device", str(timing.get("device", "")).startswith(dev),
                        f"device {timing.get('device')!r}, {timing.get('tokens_per_second')} tokens/s"))
    for stage in pipe.stages[pipe.stages.index("train") + 1:]:
        probe = first[stage]["probe"]
        if stage in pipe.eval_stages:
            pipe.checks.append((f"{stage}: layers ran on {want}", _ran_on(probe, dev, cast), _forwards(probe)))
            if stage in second:
                fp32 = second[stage]["probe"]
                pipe.checks.append((f"{stage} (fp32): layers ran on {dev}, autocast off", _ran_on(fp32, dev, None),
                                    _forwards(fp32)))
        elif stage in ("export", "base_samples") or (probe or {}).get("forwards"):
            # Generation: on the device; its autocast is shown, not asserted (sampling is not a metric).
            pipe.checks.append((f"{stage}: layers ran on {dev}", _ran_on(probe, dev, None, check_cast=False),
                                _forwards(probe)))


def samples_check(pipe: Pipeline) -> None:
    """The export's samples: every prompt under every decoding strategy (and the base model's beside them)."""
    from lmtune.eval import generation
    from lmtune.params import GenerateParams

    gp = GenerateParams(**pipe.params["generate"])
    samples_file = pipe.repo / "models" / "export" / "samples.json"
    samples = json.loads(samples_file.read_text(encoding="utf-8")) if samples_file.is_file() else []
    expected = len(gp.prompts) * len(generation.strategies(gp))
    keys = ["text", "base_text"] if "base_samples" in pipe.stages else ["text"]
    pipe.checks.append((f"export: samples.json holds every prompt × strategy ({', '.join(keys)})",
                        len(samples) == expected and all(k in s for s in samples for k in keys),
                        f"{len(samples)} samples (expected {expected}); first: {samples[0].get('text', '')[:60]!r}"
                        if samples else f"no {samples_file.relative_to(pipe.repo)}"))


def perplexity_checks(pipe: Pipeline, ppl_bf16: dict, ppl_fp32: dict) -> None:
    for model in ("base", "tuned"):
        a = (ppl_bf16.get(model) or {}).get("perplexity")
        b = (ppl_fp32.get(model) or {}).get("perplexity")
        if a is None or b is None:
            pipe.checks.append((f"perplexity {model}: bf16 vs fp32", False, f"missing: bf16 {a}, fp32 {b}"))
            continue
        rel = abs(a - b) / b
        pipe.checks.append((f"perplexity {model}: |bf16 − fp32| / fp32 ≤ {PPL_BOUND:.0%}", rel <= PPL_BOUND,
                            f"bf16 {a:.4f}, fp32 {b:.4f}: relative difference {rel:.2e}"))


def pipeline_section(rep: Report, budget: Budget) -> None:
    """Every stage with the precision under test, then the evaluations again in fp32; then the checks."""
    pipe = _prepare(rep, budget)
    first = {}
    for stage in pipe.stages:
        if (first.setdefault(stage, pipe.run_stage(stage, stage)))["rc"] != 0:
            return  # later stages need its outputs
    eval_json = pipe.repo / "metrics" / "eval.json"
    ppl_bf16 = _read_json(eval_json)
    pipe.set_precision("fp32")
    second = {}
    for stage in pipe.eval_stages:
        if (second.setdefault(stage, pipe.run_stage(stage, f"{stage} (fp32)")))["rc"] != 0:
            break
    ppl_fp32 = _read_json(eval_json) if all(r["rc"] == 0 for r in second.values()) else {}
    device_checks(pipe, first, second, _device(), "bfloat16")  # auto on a bf16 GPU; the CPU debug run asks for bf16
    samples_check(pipe)
    perplexity_checks(pipe, ppl_bf16, ppl_fp32)
    pipe.render()
    for name, ok, detail in pipe.checks:
        if not ok:
            rep.problem(f"check failed: {name} ({detail[:200]})")
