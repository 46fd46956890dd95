"""evaluate_base: the base model on the validation examples -> metrics/eval_base.json, metrics/blocks_base.csv.

Its own stage so that DVC caches it: it depends on models/base, the validation blocks and the evaluate
params only, so `dvc exp run -S train.*` does not measure the base again (`evaluate` copies it beside the
tuned numbers). For classification the base has the untrained (seeded) head, the honest baseline.
"""
from lmtune import paths
from lmtune.errors import cli
from lmtune.eval import evaluation
from lmtune.io import atomic_write_json, atomic_write_text
from lmtune.report import metrics
from stages.common import begin


@cli
def main() -> None:
    _, task = begin(tune_allocator=True)
    m, blocks = evaluation.evaluate(task, "base")
    m.pop("confusion_matrix", None)
    atomic_write_text(paths.BLOCKS_BASE, evaluation.blocks_csv(task, {"base": blocks}))
    atomic_write_json(paths.EVAL_BASE, {"base": m})
    print(f"evaluate_base: {metrics.console_line(task, 'base', m)}")


if __name__ == "__main__":
    main()
