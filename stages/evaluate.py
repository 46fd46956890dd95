"""evaluate: base and tuned model on the same validation blocks -> metrics/eval.json."""
import datasets
from transformers import AutoModelForCausalLM

from lmtune import metrics, params, paths
from lmtune.errors import cli
from lmtune.io import atomic_write_json


@cli
def main() -> None:
    p = params.load().evaluate
    blocks = datasets.load_from_disk(paths.CHUNKS)["validation"].with_format("torch")
    result = {}
    for name, folder in (("base", paths.BASE), ("tuned", paths.FINAL)):
        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
        result[name] = metrics.evaluate_causal_lm(model, blocks, p.batch_size)
    atomic_write_json(paths.EVAL_METRICS, result)
    for name, m in result.items():
        print(f"evaluate: {name:5s} loss {m['loss']:.4f}  perplexity {m['perplexity']:.2f}  accuracy {m['accuracy']:.4f}  ({m['n_tokens']} tokens)")


if __name__ == "__main__":
    main()
