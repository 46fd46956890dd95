"""evaluate: the tuned model on the validation examples, beside the base -> metrics/eval.json, metrics/blocks.csv.

What is measured is the task's (lmtune/tasks/): loss, perplexity, next-token accuracy and bits per byte for
the language-model tasks (instruction: response tokens only); accuracy, macro-F1 and per-class counts for
classification. The base numbers come from the cached `evaluate_base` stage, copied here so that
`dvc exp show` / `dvc metrics diff` show both. metrics/confusion.csv is the tuned classifier's confusion
matrix as a DVC plot (header only for the language-model tasks).
"""
import json

from lmtune import paths
from lmtune.errors import cli
from lmtune.eval import evaluation
from lmtune.io import staged_outputs, write_json
from lmtune.report import metrics
from stages.common import begin


@cli
def main() -> None:
    _, task = begin(tune_allocator=True)
    tuned, blocks = evaluation.evaluate(task, "tuned")
    base_blocks = evaluation.read_blocks(paths.BLOCKS_BASE, task, "base")
    evaluation.same_blocks(task, base_blocks, blocks)
    result = {"base": json.loads(paths.EVAL_BASE.read_text(encoding="utf-8"))["base"], "tuned": tuned}
    plot = evaluation.confusion_csv(tuned)
    tuned.pop("confusion_matrix", None)
    with staged_outputs(paths.BLOCKS, paths.CONFUSION, paths.EVAL_METRICS) as (blocks_csv, confusion, eval_json):
        blocks_csv.write_text(evaluation.blocks_csv(task, {"base": base_blocks, "tuned": blocks}), encoding="utf-8")
        confusion.write_text(plot, encoding="utf-8")
        write_json(eval_json, result)
    for name, m in result.items():
        print(f"evaluate: {metrics.console_line(task, name, m)}")


if __name__ == "__main__":
    main()
