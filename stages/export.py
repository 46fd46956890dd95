"""export: the tuned model as safetensors + tokenizer + configs + model card + samples (base beside tuned).

What goes in the folder and how the weights get there (linked, or a LoRA run merged): lmtune/report/export.py.
"""
from lmtune import device, paths
from lmtune.errors import cli
from lmtune.report import export
from stages.common import begin


@cli
def main() -> None:
    p, task = begin()
    samples = export.export(task, device.current(p.train.precision))
    print(f"export: {paths.EXPORT} ({len(samples)} samples, base beside tuned)")


if __name__ == "__main__":
    main()
