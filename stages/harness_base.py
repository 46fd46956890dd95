"""harness_base: lm-evaluation-harness on the base model (the tasks' documents from harness_data) ->
metrics/harness_base.json, metrics/harness_samples_base.jsonl, committed together.

Its own stage so that DVC caches it (like evaluate_base): it depends on models/base, the documents and the
harness params only, so `dvc exp run -S train.*` reruns only the tuned side (`harness`).
"""
from lmtune import paths
from lmtune.errors import cli
from lmtune.eval import harness
from lmtune.io import staged_outputs, write_json
from stages.common import begin


@cli
def main() -> None:
    p, task = begin()
    rec, samples = harness.measure(paths.BASE, p, task, "base")
    with staged_outputs(paths.HARNESS_SAMPLES_BASE, paths.HARNESS_BASE) as (samples_file, metrics_file):
        samples_file.write_text(samples, encoding="utf-8")
        write_json(metrics_file, rec)
    print("\n".join(harness.lines(rec, "base")))


if __name__ == "__main__":
    main()
