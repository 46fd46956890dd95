"""Print what `make repro` produced: base vs tuned metrics and where the exported model is."""
import json

from lmtune import paths


def main() -> None:
    ev = json.loads(paths.EVAL_METRICS.read_text())
    if all("macro_f1" in m for m in ev.values()):  # a classifier (task: classification)
        print(f"\n{'model':6s} {'accuracy':>9s} {'macro-F1':>9s} {'examples':>9s}")
        for name, m in ev.items():
            print(f"{name:6s} {m['accuracy']:9.4f} {m['macro_f1']:9.4f} {m['n_examples']:9d}")
    else:
        print(f"\n{'model':6s} {'loss':>8s} {'perplexity':>11s} {'accuracy':>9s} {'tokens':>8s}")
        for name, m in ev.items():
            print(f"{name:6s} {m['loss']:8.4f} {m['perplexity']:11.2f} {m['accuracy']:9.4f} {m['n_tokens']:8d}")
    if paths.TRAIN_TIMING.is_file():
        t = json.loads(paths.TRAIN_TIMING.read_text())
        print(f"\ntrain: {t['wall_time_s']} s, {t['tokens_per_second']} tokens/s on {t['device']}")
    print(f"exported model: {paths.EXPORT}  (samples: {paths.EXPORT / 'samples.json'})")


if __name__ == "__main__":
    main()
