"""export: the tuned model as safetensors + tokenizer + configs + model card + samples (base beside tuned).

The weights are read once and written at most once. Plain fine-tuning: models/final's safetensors
files are hard-linked into the export (a copy where links are impossible): the bytes are the same, so
writing them again only costs time and a second copy on disk. A LoRA run is merged into plain weights
(models/export/, loads without peft; these are new bytes, so they are saved) and the adapter itself is
kept in models/export/adapter/. The config restores `use_cache: true` (training saves it false), and a
language model ships its generation config. The base model's samples come from the base_samples stage,
made once per base model and generate settings; only the tuned model generates here (with the KV cache,
on the device lmtune.device picks).
"""
import json
import os
import shutil
from pathlib import Path

from transformers import AutoTokenizer

from lmtune import device, params, paths, tasks
from lmtune.report import card
from lmtune.eval import generation
from lmtune.errors import UserError, cli
from lmtune.io import atomic_dir


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


def base_samples() -> list[dict]:
    if not paths.BASE_SAMPLES.is_file():
        raise UserError(f"{paths.BASE_SAMPLES.relative_to(paths.ROOT)}: missing; run `dvc repro` (stage base_samples)")
    return json.loads(paths.BASE_SAMPLES.read_text(encoding="utf-8"))


@cli
def main() -> None:
    p = params.load()
    task = tasks.get(p.task)
    placement = device.current(p.train.precision)
    adapter = tasks.is_adapter(paths.FINAL)
    model = generation.place(task.load_tuned(paths.FINAL, paths.BASE, p.seed, p.flatten.label_names), placement)
    tokenizer = AutoTokenizer.from_pretrained(paths.FINAL)
    task.prepare_export(model, tokenizer, p.generate)
    samples = task.pair_samples(base_samples(), task.samples(model, tokenizer, p.generate, p.flatten, placement))
    with atomic_dir(paths.EXPORT) as tmp:
        if adapter:
            model.save_pretrained(tmp)  # merged weights: new bytes
            (tmp / "adapter").mkdir()
            for f in paths.FINAL.glob("adapter_*"):
                shutil.copy2(f, tmp / "adapter" / f.name)
        else:
            for f in [*paths.FINAL.glob("*.safetensors"), *paths.FINAL.glob("*.safetensors.index.json")]:
                link_or_copy(f, tmp / f.name)
            model.config.save_pretrained(tmp)  # use_cache restored by generation.place
            if model.can_generate():
                model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        card.model_card(p, samples, task.shipped_defaults(model)).save(tmp / "README.md")
    print(f"export: {paths.EXPORT} ({len(samples)} samples, base beside tuned)")


if __name__ == "__main__":
    main()
