"""evaluate_base: the base model on the validation examples -> metrics/eval_base.json, metrics/blocks_base.csv.

Its own stage so that DVC caches it: it depends on models/base, the validation blocks and the evaluate
params only, so `dvc exp run -S train.*` does not measure the base again (`evaluate` copies it beside the
tuned numbers). For classification the base has the untrained (seeded) head, the honest baseline.
"""
from lmtune import paths
from lmtune.errors import cli
from lmtune.eval import evaluation
from lmtune.io import staged_outputs, write_json
from lmtune.report import metrics
from stages.common import begin


@cli
def main() -> None:
    _, task = begin(tune_allocator=True)
    m, blocks = evaluation.evaluate(task, "base")
    m.pop("confusion_matrix", None)
    with staged_outputs(paths.BLOCKS_BASE, paths.EVAL_BASE) as (blocks_csv, eval_json):
        blocks_csv.write_text(evaluation.blocks_csv(task, {"base": blocks}), encoding="utf-8")
        write_json(eval_json, {"base": m})
    print(f"evaluate_base: {metrics.console_line(task, 'base', m)}")


if __name__ == "__main__":
    main()
