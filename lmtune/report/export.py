"""The exported model folder: weights, tokenizer, configs, the model card and the samples (base beside tuned).

The weights are read once and written at most once. Plain fine-tuning: models/final's safetensors
files are hard-linked into the export (a copy where links are impossible): the bytes are the same, so
writing them again only costs time and a second copy on disk. A LoRA run is merged into plain weights
(loads without peft; these are new bytes, so they are saved) and the adapter itself is kept in
`adapter/`. The config restores `use_cache: true` (training saves it false), and a language model
ships its generation config. The base model's samples come from the base_samples stage, made once per
base model and generate settings; only the tuned model generates here (with the KV cache).
"""
import json
import os
import shutil
from pathlib import Path

from transformers import AutoTokenizer

from lmtune import paths
from lmtune.errors import UserError
from lmtune.eval import generation
from lmtune.io import atomic_dir
from lmtune.models import lora
from lmtune.report import card


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def read_base_samples(path: Path = paths.BASE_SAMPLES) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path.relative_to(paths.ROOT)}: missing; run `dvc repro` (stage base_samples)")
    return json.loads(path.read_text())


def write_weights(model, final: Path, out: Path) -> None:
    """A LoRA run's merged weights (new bytes) and its adapter; else models/final's files linked."""
    if lora.is_adapter(final):
        model.save_pretrained(out)
        (out / "adapter").mkdir()
        for f in final.glob("adapter_*"):
            shutil.copy2(f, out / "adapter" / f.name)
        return
    for f in [*final.glob("*.safetensors"), *final.glob("*.safetensors.index.json")]:
        link_or_copy(f, out / f.name)
    model.config.save_pretrained(out)  # use_cache restored by generation.place
    if model.can_generate():
        model.generation_config.save_pretrained(out)


def export(task, placement, final: Path = paths.FINAL, out: Path = paths.EXPORT) -> list[dict]:
    """Write the export folder of the tuned model in `final`; returns the paired samples it holds."""
    p = task.p
    model = lora.load_tuned(final, paths.BASE, task.head, p.seed, **task.model_kwargs())
    model = generation.place(model, placement)
    tokenizer = AutoTokenizer.from_pretrained(final)
    if task.head.generates:
        model.generation_config = generation.export_config(p.generate, tokenizer)
    tuned = generation.task_samples(task, model, tokenizer, p.generate, placement)
    samples = generation.pair(read_base_samples(), tuned)
    with atomic_dir(out) as tmp:
        write_weights(model, final, tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False) + "\n")
        card.model_card(task, samples, model).save(tmp / "README.md")
    return samples
