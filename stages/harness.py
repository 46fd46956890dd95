"""harness: lm-evaluation-harness on the exported model, beside the base -> metrics/harness.json (base and
tuned, each task's metrics with the harness's stderr, lm-eval's version), metrics/harness_samples.jsonl.

The base side comes from the cached `harness_base` stage, so a `train.*` experiment measures only the
tuned model. Tasks and settings: params.yaml's `harness:` section (lmtune/eval/harness.py).
"""
import json

from lmtune import paths
from lmtune.errors import cli
from lmtune.eval import harness
from lmtune.io import staged_outputs, write_json
from stages.common import begin


@cli
def main() -> None:
    p, task = begin()
    tuned, samples = harness.measure(paths.EXPORT, p, task, "tuned")
    result = harness.side_by_side(json.loads(paths.HARNESS_BASE.read_text(encoding="utf-8")), tuned)
    with staged_outputs(paths.HARNESS_SAMPLES, paths.HARNESS_METRICS) as (samples_file, metrics_file):
        samples_file.write_text(samples, encoding="utf-8")
        write_json(metrics_file, result)
    print("\n".join(harness.lines(result, "base") + harness.lines(result, "tuned")))


if __name__ == "__main__":
    main()
