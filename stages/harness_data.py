"""harness_data: the offline harness tasks' documents -> data/harness/ (`heldout.jsonl`: data/flat's validation
split; `sotu_oldest.jsonl`: the oldest speeches of the bundled corpus; `about.json`), which lm-eval reads in
harness_base and harness. Its own stage: one output, written whole, before either model is scored.
"""
from lmtune.errors import cli
from lmtune.eval import harness
from stages.common import begin


@cli
def main() -> None:
    p, task = begin()
    about = harness.write_documents(task, p.harness)
    print(f"harness_data: {harness.documents_line(about)}")


if __name__ == "__main__":
    main()
