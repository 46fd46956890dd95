"""train: fine-tune the base model on the training blocks; resumable checkpoints (scratch), dvclive curves.

train.num_processes > 1 re-starts the stage under `accelerate launch` (lmtune/train/launch.py); only the
main process writes outputs. The work is lmtune.train.finetune's: a memory preflight (lmtune.train.plan)
before the first step, resuming only from checkpoints with the same identity (lmtune.train.checkpoints), and
a marker beside the outputs (paths.TRAIN_MARKER) that lets the next run report one the OS killed.
The model, the curves and both metrics files are committed together: all new, or all as they were.
"""
import shutil

from lmtune import gpus, paths, tasks
from lmtune.errors import cli
from lmtune.io import staged_outputs, write_json
from lmtune.train import finetune, launch


@cli
def main() -> None:
    p, task = tasks.load_params()
    # train.num_processes > 1 (or an accelerate config): start this stage again under `accelerate launch`
    # and exit with its status; in the launched processes (and for one process) this returns at once.
    launch.relaunch(p.train.num_processes, p.train.accelerate_config, paths.ROOT)
    if p.train.num_processes == 1 and p.train.accelerate_config is None:
        gpus.claim()  # on a machine with several GPUs: lock one and see only it (make sweep JOBS=N)
    main_process = finetune.is_main_process()
    outputs = (paths.FINAL, paths.TRAIN_LIVE, paths.TRAIN_METRICS, paths.TRAIN_TIMING)
    with staged_outputs(*outputs, commit=main_process) as (final, curves, metrics_file, timing_file):
        metrics, timing = finetune.fine_tune(p, task, final, curves)
        if main_process:
            write_json(metrics_file, metrics)
            write_json(timing_file, timing)
    if main_process:
        # Checkpoints are crash-resume scratch: once models/final is written they are never resumed (a
        # finished run is trained again from step 0), so free their disk (weights + fp32 optimizer state).
        shutil.rmtree(paths.CHECKPOINTS, ignore_errors=True)
        print(f"train: {metrics['steps']} steps, loss {metrics['train_loss']:.4f}, {timing['tokens_per_second']} tokens/s")


if __name__ == "__main__":
    main()
