"""After `dvc repro` (`make repro` runs it): remove what a killed train run left, when DVC did not run train.

A killed run leaves models/checkpoints/ (its resume scratch, GBs of weights and optimizer state) and
models/train-in-progress.json. The next run of the stage resumes or discards them. But when `dvc repro`
restores train's outputs from DVC's run-cache (the same params and data as an earlier finished run), the
stage's command never runs, and DVC has no hook after a restore: so this runs after `dvc repro`. It removes
the scratch when train is up to date and the checkpoints were made from the same inputs (nothing can resume
them), and says in one line why it keeps checkpoints made from other inputs (a run with those resumes them).
"""
import shutil

from lmtune import params, paths
from lmtune.train import checkpoints


def size(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def train_up_to_date() -> bool:
    """dvc status of train and everything upstream of it: nothing to run."""
    from dvc.repo import Repo

    with Repo(str(paths.ROOT)) as repo:
        return not repo.status(targets=["train"])


def main() -> None:
    if not (paths.CHECKPOINTS.exists() or paths.TRAIN_MARKER.exists()) or not train_up_to_date():
        return  # nothing left, or train runs next time and resumes or discards them itself
    held = f"{size(paths.CHECKPOINTS) / 2**30:.1f} GB"
    if checkpoints.superseded(params.load()):
        shutil.rmtree(paths.CHECKPOINTS, ignore_errors=True)
        paths.TRAIN_MARKER.unlink(missing_ok=True)
        print(f"train: removed a killed run's scratch ({held} in models/checkpoints, and its marker): "
              f"train's outputs for the same params and data are in place")
    else:
        print(f"train: keeping models/checkpoints ({held}) from a killed run with other params or data (a run with "
              f"those resumes from it); `rm -r models/checkpoints models/train-in-progress.json` frees it")


if __name__ == "__main__":
    main()
