"""export: the tuned model as safetensors + tokenizer + generation config + model card + samples."""
import json

from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from lmtune import export, generation, params, paths
from lmtune.errors import cli
from lmtune.io import atomic_dir


@cli
def main() -> None:
    p = params.load()
    model = AutoModelForCausalLM.from_pretrained(paths.FINAL, use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(paths.FINAL)
    model.generation_config = GenerationConfig(
        **generation.strategies(p.generate)["top_p"], max_new_tokens=p.generate.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    samples = generation.samples(model, tokenizer, p.generate)
    with atomic_dir(paths.EXPORT) as tmp:
        model.save_pretrained(tmp)  # safetensors
        tokenizer.save_pretrained(tmp)
        (tmp / "samples.json").write_text(json.dumps(samples, indent=2, ensure_ascii=False) + "\n")
        (tmp / "README.md").write_text(export.model_card(p, samples))
    print(f"export: {paths.EXPORT} ({len(samples)} samples)")


if __name__ == "__main__":
    main()
