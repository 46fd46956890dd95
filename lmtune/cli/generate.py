"""Generate text from the exported model: `python -m lmtune.cli.generate --prompt "..." [--strategy top_p]`.

Decoding settings default to params.yaml's `generate` section; flags override them. What a sample is comes
from the task (lmtune/tasks/): generations per decoding strategy, or a classifier's predicted label.
"""
import argparse

from transformers import AutoTokenizer

from lmtune import device, params, paths, tasks
from lmtune.errors import cli
from lmtune.eval import generation
from lmtune.models import loading
from lmtune.report import samples


@cli
def main(argv=None) -> None:
    all_params, task = tasks.load_params()
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
    loading.check_model_dir(a.model)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    placement = device.current(all_params.train.precision)
    model = generation.place(loading.auto_class(task.head).from_pretrained(a.model, use_safetensors=True), placement)
    for s in generation.task_samples(task, model, tokenizer, gp, placement, only=a.strategy, raw=a.raw):
        print(samples.line(s))


if __name__ == "__main__":
    main()
