"""Print what `make repro` produced: base vs tuned metrics and where the exported model is."""
import json

from lmtune import params, paths, tasks
from lmtune.report import metrics


def main() -> None:
    ev = json.loads(paths.EVAL_METRICS.read_text())
    task = tasks.get(params.load().task)
    print()
    for name, m in ev.items():
        print(metrics.console_line(task, name, m))
    if paths.TRAIN_TIMING.is_file():
        t = json.loads(paths.TRAIN_TIMING.read_text())
        print(f"\ntrain: {t['wall_time_s']} s, {t['tokens_per_second']} tokens/s on {t['device']}")
    print(f"exported model: {paths.EXPORT}  (samples: {paths.EXPORT / 'samples.json'})")


if __name__ == "__main__":
    main()
