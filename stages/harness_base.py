"""harness_base: the offline harness tasks' documents -> data/harness/, then lm-evaluation-harness on the base
model -> metrics/harness_base.json, metrics/harness_samples_base.jsonl.

Its own stage so that DVC caches it (like evaluate_base): it depends on models/base, the documents' sources
and the harness params only, so `dvc exp run -S train.*` reruns only the tuned side (`harness`).
"""
from lmtune import paths
from lmtune.errors import cli
from lmtune.eval import harness
from lmtune.io import atomic_write_json, atomic_write_text
from stages.common import begin


@cli
def main() -> None:
    p, task = begin()
    harness.write_documents(task, p.harness)
    rec, samples = harness.measure(paths.BASE, p, task, "base")
    atomic_write_text(paths.HARNESS_SAMPLES_BASE, samples)
    atomic_write_json(paths.HARNESS_BASE, rec)
    print("\n".join(harness.lines(rec, "base")))


if __name__ == "__main__":
    main()
