"""Generate text from the exported model: `python -m lmtune.generate --prompt "..." [--strategy top_p]`.

Decoding settings default to params.yaml's `generate` section; flags override them.
"""
import argparse

from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from lmtune import generation, params, paths, tasks
from lmtune.errors import cli
from lmtune.models import check_model_dir


@cli
def main(argv=None) -> None:
    all_params = params.load()
    gp = all_params.generate
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--model", default=str(paths.EXPORT))
    ap.add_argument("--strategy", choices=["greedy", "temperature", "top_k", "top_p", "all"], default="all")
    ap.add_argument("--max-new-tokens", type=int, default=gp.max_new_tokens)
    ap.add_argument("--temperature", type=float, default=gp.temperature)
    ap.add_argument("--top-k", type=int, default=gp.top_k)
    ap.add_argument("--top-p", type=float, default=gp.top_p)
    ap.add_argument("--seed", type=int, default=gp.seed)
    ap.add_argument("--raw", action="store_true", help="instruction task: do not wrap the prompt in the template")
    a = ap.parse_args(argv)
    gp = params.GenerateParams(prompts=[a.prompt], max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                               top_k=a.top_k, top_p=a.top_p, seed=a.seed)
    check_model_dir(a.model)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    if all_params.task == "classification":
        model = AutoModelForSequenceClassification.from_pretrained(a.model, use_safetensors=True).eval()
        for s in generation.classify(model, tokenizer, [a.prompt]):
            print(f"[{s['label']}] {a.prompt}  {s['probabilities']}")
        return
    model = AutoModelForCausalLM.from_pretrained(a.model, use_safetensors=True).eval()
    # An instruction model is prompted with the template it was trained on.
    prompt = a.prompt if a.raw or all_params.task != "instruction" else tasks.instruction_prompt(all_params.flatten, a.prompt)
    for name, kw in generation.strategies(gp).items():
        if a.strategy in (name, "all"):
            text = generation.generate(model, tokenizer, prompt, gp.max_new_tokens, gp.seed, **kw)
            print(f"[{name}] {prompt}{text}\n")


if __name__ == "__main__":
    main()
