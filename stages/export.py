"""export: the tuned model as safetensors + tokenizer + generation config + model card + samples.

A LoRA run is exported twice: merged into plain weights (models/export/, loads without peft) and as
the adapter itself (models/export/adapter/). A classifier keeps its label names in config.json
(id2label / label2id) and its samples are the predicted labels of the `generate.prompts` texts.
"""
import functools
import json
import shutil

from transformers import AutoTokenizer, GenerationConfig

from lmtune import export, generation, params, paths, tasks
from lmtune.errors import cli
from lmtune.io import atomic_dir


@cli
def main() -> None:
    p = params.load()
    model = tasks.load_tuned(p.task, paths.FINAL, paths.BASE, p.seed, p.flatten.label_names)
    tokenizer = AutoTokenizer.from_pretrained(paths.FINAL)
    if p.task == "classification":
        samples = generation.classify(model, tokenizer, p.generate.prompts)
    else:
        model.generation_config = GenerationConfig(
            **generation.strategies(p.generate)["top_p"], max_new_tokens=p.generate.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        fmt = functools.partial(tasks.instruction_prompt, p.flatten) if p.task == "instruction" else None
        samples = generation.samples(model, tokenizer, p.generate, format_prompt=fmt)
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
