"""Generate text from the exported model: `python -m lmtune.generate --prompt "..." [--strategy top_p]`.

Decoding settings default to params.yaml's `generate` section; flags override them.
"""
import argparse

from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtune import generation, params, paths
from lmtune.errors import cli
from lmtune.models import check_model_dir


@cli
def main(argv=None) -> None:
    gp = params.load().generate
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--model", default=str(paths.EXPORT))
    ap.add_argument("--strategy", choices=["greedy", "temperature", "top_k", "top_p", "all"], default="all")
    ap.add_argument("--max-new-tokens", type=int, default=gp.max_new_tokens)
    ap.add_argument("--temperature", type=float, default=gp.temperature)
    ap.add_argument("--top-k", type=int, default=gp.top_k)
    ap.add_argument("--top-p", type=float, default=gp.top_p)
    ap.add_argument("--seed", type=int, default=gp.seed)
    a = ap.parse_args(argv)
    gp = params.GenerateParams(prompts=[a.prompt], max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                               top_k=a.top_k, top_p=a.top_p, seed=a.seed)
    check_model_dir(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    for name, kw in generation.strategies(gp).items():
        if a.strategy in (name, "all"):
            text = generation.generate(model, tokenizer, a.prompt, gp.max_new_tokens, gp.seed, **kw)
            print(f"[{name}] {a.prompt}{text}\n")


if __name__ == "__main__":
    main()
