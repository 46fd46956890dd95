"""evaluate_base: the base model on the validation examples -> metrics/eval_base.json, metrics/blocks_base.csv.

Its own stage so that DVC caches it: it depends on models/base, the validation blocks and the evaluate
params only, so `dvc exp run -S train.*` does not measure the base again (`evaluate` copies it beside the
tuned numbers). For classification the base has the untrained (seeded) head, the honest baseline.
"""
from lmtune import allocator, params, paths, tasks
from lmtune.eval import evaluation
from lmtune.errors import cli
from lmtune.io import atomic_write_json, atomic_write_text


@cli
def main() -> None:
    allocator.tune_cpu_allocator()  # large per-step tensors: reuse memory instead of page-faulting it in
    p = params.load()
    task = tasks.get(p.task)
    m, blocks = evaluation.evaluate(p, "base")
    m.pop("confusion_matrix", None)
    atomic_write_text(paths.BLOCKS_BASE, evaluation.blocks_csv(task, {"base": blocks}))
    atomic_write_json(paths.EVAL_BASE, {"base": m})
    print(f"evaluate_base: {task.summary('base', m)}")


if __name__ == "__main__":
    main()
