"""evaluate: base and tuned model on the same validation examples -> metrics/eval.json.

causal LM / instruction: loss, perplexity, next-token accuracy (instruction: response tokens only).
classification: accuracy, macro-F1, per-class counts; the base model has the untrained (seeded) head,
the honest baseline. metrics/confusion.csv is the tuned model's confusion matrix as a DVC plot
(header only for the language-model tasks).
"""
import datasets

from lmtune import allocator, evaluation, params, paths, tasks
from lmtune.errors import cli
from lmtune.io import atomic_write_json, atomic_write_text


@cli
def main() -> None:
    allocator.tune_cpu_allocator()  # large per-step tensors: reuse memory instead of page-faulting it in
    p = params.load()
    names = p.flatten.label_names
    blocks = datasets.load_from_disk(paths.CHUNKS)["validation"].with_format("torch")
    result = {}
    for name, folder in (("base", paths.BASE), ("tuned", paths.FINAL)):
        if name == "base":
            model = tasks.load_model(p.task, folder, p.seed, names)
        else:  # plain weights, or base + LoRA adapter merged
            model = tasks.load_tuned(p.task, folder, paths.BASE, p.seed, names)
        result[name] = evaluation.evaluate_model(p.task, model, blocks, p.evaluate.batch_size, names)
    matrix = result["tuned"].pop("confusion_matrix", None)
    result["base"].pop("confusion_matrix", None)
    atomic_write_json(paths.EVAL_METRICS, result)
    atomic_write_text(paths.CONFUSION, evaluation.confusion_csv(matrix, names) if matrix else "actual,predicted\n")
    for name, m in result.items():
        if p.task == "classification":
            print(f"evaluate: {name:5s} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ({m['n_examples']} examples)")
        else:
            print(f"evaluate: {name:5s} loss {m['loss']:.4f}  perplexity {m['perplexity']:.2f}  accuracy {m['accuracy']:.4f}  ({m['n_tokens']} tokens)")


if __name__ == "__main__":
    main()
