"""export: the tuned model as safetensors + tokenizer + generation config + model card + samples.

A LoRA run is exported twice: merged into plain weights (models/export/, loads without peft) and as
the adapter itself (models/export/adapter/). A classifier keeps its label names in config.json
(id2label / label2id) and its samples are the predicted labels of the `generate.prompts` texts.
"""
import json
import shutil

from transformers import AutoTokenizer

from lmtune import export, params, paths, tasks
from lmtune.errors import cli
from lmtune.io import atomic_dir


@cli
def main() -> None:
    p = params.load()
    task = tasks.get(p.task)
    model = task.load_tuned(paths.FINAL, paths.BASE, p.seed, p.flatten.label_names)
    tokenizer = AutoTokenizer.from_pretrained(paths.FINAL)
    task.prepare_export(model, tokenizer, p.generate)
    samples = task.samples(model, tokenizer, p.generate, p.flatten)
    with atomic_dir(paths.EXPORT) as tmp:
        model.save_pretrained(tmp)  # safetensors (LoRA: merged into the plain weights)
        tokenizer.save_pretrained(tmp)
        if tasks.is_adapter(paths.FINAL):
            (tmp / "adapter").mkdir()
            for f in paths.FINAL.glob("adapter_*"):
                shutil.copy2(f, tmp / "adapter" / f.name)
        (tmp / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False) + "\n")
        (tmp / "README.md").write_text(export.model_card(p, samples))
    print(f"export: {paths.EXPORT} ({len(samples)} samples)")


if __name__ == "__main__":
    main()
