"""Multi-process training inside the train stage: the stage re-starts itself under `accelerate launch`.

`train.num_processes` (the world size: all processes on all machines) and `train.accelerate_config`
(null, or an accelerate config file) are params, so `dvc repro` and `dvc exp run -S train.num_processes=4`
run multi-process training with no manual step, and dvc.lock records how a model was trained.
num_processes 1 without a config file keeps today's plain single process.

Where a process runs is not a param (it does not change what is computed): on a multi-node job each
machine sets LMTUNE_MACHINE_RANK (0 on the machine that runs `dvc repro`) and, when the config file does
not name it, LMTUNE_MAIN_PROCESS_IP (machine 0's address), e.g. from SLURM's variables.
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

from lmtune.errors import UserError

# Set in the launched processes' environment, so they train instead of launching again.
MARKER = "LMTUNE_LAUNCHED"
MACHINE_RANK = "LMTUNE_MACHINE_RANK"
MAIN_PROCESS_IP = "LMTUNE_MAIN_PROCESS_IP"


def launch_args(num_processes: int, config_file: str | None, env: dict) -> list[str] | None:
    """The `accelerate launch` arguments that re-start the train stage, or None to train in this process.

    Always passed: `--num_processes` (params are the source of truth, over the config file),
    `--mixed_precision no` and `--dynamo_backend no` (train.precision and train.torch_compile choose
    those; a launcher setting would silently override them).
    Without a config file the processes share this machine: `--multi_gpu` is accelerate's DDP mode
    (on a machine without GPUs the Trainer's use_cpu makes them one gloo group), `--num_machines 1`,
    and port 0 = a free port, so two runs on one machine do not collide on the default 29500.
    With a config file, its distributed type (DDP, FSDP, DeepSpeed), machines, address and port apply.
    """
    if num_processes == 1 and config_file is None:
        return None
    args = ["--num_processes", str(num_processes), "--mixed_precision", "no", "--dynamo_backend", "no"]
    if config_file is None:
        args += ["--multi_gpu", "--num_machines", "1", "--main_process_port", "0"]
    else:
        args += ["--config_file", config_file]
    if env.get(MACHINE_RANK):
        args += ["--machine_rank", env[MACHINE_RANK]]
    if env.get(MAIN_PROCESS_IP):
        args += ["--main_process_ip", env[MAIN_PROCESS_IP]]
    return args + ["-m", "stages.train"]


def launched(env: dict) -> bool:
    """True in a process that a launcher started (ours, or a hand-run accelerate launch / torchrun)."""
    return MARKER in env or "LOCAL_RANK" in env


def check_world_size(num_processes: int, env: dict) -> None:
    """A launched process must be one of exactly train.num_processes, or dvc.lock would misstate the run."""
    world = int(env.get("WORLD_SIZE", "1"))
    if world != num_processes:
        raise UserError(f"train.num_processes is {num_processes} but this process was started as one of "
                        f"{world} (WORLD_SIZE={world}); set train.num_processes: {world} in params.yaml")


def die_with_launcher() -> None:
    """In a process our launcher started: be SIGKILLed when the launcher dies, however it dies.

    torch's elastic agent starts each process in a session of its own (start_new_session), so a SIGKILL to
    the stage's process group (a user's kill, a job scheduler, the tests) would reach the launcher only,
    and the processes would train on and write the outputs of a run that was killed. Linux's parent-death
    signal ties them to it; elsewhere this does nothing.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before prctl: nothing will send the signal now
        os.kill(os.getpid(), signal.SIGKILL)


def relaunch(num_processes: int, config_file: str | None, root: Path) -> None:
    """Start the train stage under `accelerate launch` and exit with its status, unless this process
    should train itself (one process, or already launched). Call first thing in the stage's main()."""
    if launched(os.environ):
        check_world_size(num_processes, os.environ)
        if MARKER in os.environ and sys.platform.startswith("linux"):
            die_with_launcher()
        return
    if config_file is not None and not (root / config_file).is_file():
        raise UserError(f"train.accelerate_config: file not found: {config_file}")
    args = launch_args(num_processes, config_file and str(root / config_file), dict(os.environ))
    if args is None:
        return
    print("train: accelerate launch " + shlex.join(args), flush=True)
    # accelerate's own CLI parser and launcher, in this process: the same as running `accelerate
    # launch ...`, but a failed process becomes one `error:` line here instead of the launcher's traceback.
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    os.environ[MARKER] = "1"  # inherited by the launched processes
    try:
        launch_command(launch_command_parser().parse_args(args))
    except ChildFailedError as e:  # torchrun (DDP, FSDP): one entry per failed process
        codes = "/".join(str(c) for c in sorted({f.exitcode for f in e.failures.values()}))
        raise UserError(f"train failed under accelerate launch ({num_processes} processes, exit code {codes}); "
                        "the processes' own errors are above") from None
    except subprocess.CalledProcessError as e:  # accelerate's other launchers (DeepSpeed, one process)
        raise UserError(f"train failed under accelerate launch ({num_processes} processes, exit code "
                        f"{e.returncode}); the processes' own errors are above") from None
    except (ValueError, TypeError, KeyError) as e:  # accelerate rejected the config file or the flags
        where = f"train.accelerate_config ({config_file})" if config_file else "train.num_processes"
        raise UserError(f"{where}: accelerate launch refused it: {' '.join(str(e).split())}") from None
    finally:
        del os.environ[MARKER]
    sys.exit(0)
