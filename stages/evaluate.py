"""evaluate: base and tuned model on the same validation examples -> metrics/eval.json.

What is measured is the task's (lmtune/tasks/): loss, perplexity, next-token accuracy for the language-model
tasks (instruction: response tokens only); accuracy, macro-F1 and per-class counts for classification, where
the base model has the untrained (seeded) head, the honest baseline. metrics/confusion.csv is the tuned
classifier's confusion matrix as a DVC plot (header only for the language-model tasks).
"""
import datasets

from lmtune import allocator, params, paths, tasks
from lmtune.errors import cli
from lmtune.io import atomic_write_json, atomic_write_text


@cli
def main() -> None:
    allocator.tune_cpu_allocator()  # large per-step tensors: reuse memory instead of page-faulting it in
    p = params.load()
    task, names = tasks.get(p.task), p.flatten.label_names
    blocks = datasets.load_from_disk(paths.CHUNKS)["validation"].with_format("torch")
    result = {}
    for name, folder in (("base", paths.BASE), ("tuned", paths.FINAL)):
        if name == "base":
            model = task.load_model(folder, p.seed, names)
        else:  # plain weights, or base + LoRA adapter merged
            model = task.load_tuned(folder, paths.BASE, p.seed, names)
        result[name] = task.evaluate(model, blocks, p.evaluate.batch_size, names)
    plot = task.plot_csv(result["tuned"], names)
    for m in result.values():
        m.pop("confusion_matrix", None)
    atomic_write_json(paths.EVAL_METRICS, result)
    atomic_write_text(paths.CONFUSION, plot)
    for name, m in result.items():
        print(f"evaluate: {task.summary(name, m)}")


if __name__ == "__main__":
    main()
