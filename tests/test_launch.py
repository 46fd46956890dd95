"""lmtune/train/launch.py: the `accelerate launch` command the train stage re-starts itself with.

The commands are checked with accelerate's own parser and validation (what `accelerate launch` would
do with them), without starting any process; tests/test_distributed.py runs one through `dvc repro`.
"""
import os

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser

from lmtune.train import launch
from lmtune.errors import UserError
from repo_tools import FlushedStdout

MULTI_NODE = """\
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_machines: 2
num_processes: 16
machine_rank: 0
main_process_ip: 10.0.0.1
main_process_port: 29500
rdzv_backend: static
same_network: true
mixed_precision: bf16
"""


def accelerate_view(args):
    """The launch settings accelerate derives from `accelerate launch ARGS`."""
    return _validate_launch_command(launch_command_parser().parse_args(args))[0]


def test_one_process_without_a_config_trains_in_this_process():
    assert launch.launch_args(1, None, {}) is None


def test_two_processes_on_this_machine():
    args = launch.launch_args(2, None, {})
    assert args[-2:] == ["-m", "stages.train"]
    seen = accelerate_view(args)
    # DDP mode (gloo on CPUs), one machine, a free port, and params' precision/compile settings kept.
    assert (seen.num_processes, seen.multi_gpu, seen.num_machines) == (2, True, 1)
    assert (seen.main_process_port, seen.mixed_precision, seen.dynamo_backend) == (0, "no", "no")
    assert seen.module and seen.training_script == "stages.train"


def test_config_file_with_machine_rank_and_address_from_the_environment(tmp_path):
    cfg = tmp_path / "multi-node.yaml"
    cfg.write_text(MULTI_NODE)
    env = {launch.MACHINE_RANK: "1", launch.MAIN_PROCESS_IP: "10.0.0.7"}
    args = launch.launch_args(16, str(cfg), env)
    assert "--multi_gpu" not in args  # the file's distributed type applies (it could be FSDP or DeepSpeed)
    seen = accelerate_view(args)
    assert (seen.num_processes, seen.num_machines, seen.machine_rank) == (16, 2, 1)
    assert seen.main_process_ip == "10.0.0.7" and seen.main_process_port == 29500
    # train.precision decides, not the file's `mixed_precision: bf16`.
    assert seen.mixed_precision == "no"
    # Params win over the file: the world size is train.num_processes.
    assert accelerate_view(launch.launch_args(8, str(cfg), {})).num_processes == 8
    # One process with a config file still goes through the launcher (e.g. single-GPU DeepSpeed offload).
    assert launch.launch_args(1, str(cfg), {})[:2] == ["--num_processes", "1"]


def test_launched_processes_do_not_launch_again():
    assert launch.launched({launch.MARKER: "1"})
    assert launch.launched({"LOCAL_RANK": "0"})  # started by hand with accelerate launch / torchrun
    assert not launch.launched({})


def test_a_launched_process_must_match_num_processes():
    launch.check_world_size(2, {"WORLD_SIZE": "2"})
    launch.check_world_size(1, {})
    with pytest.raises(UserError, match=r"train\.num_processes is 1 .* one of 2 .*train\.num_processes: 2"):
        launch.check_world_size(1, {"WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_missing_or_refused_config_file_is_one_line(tmp_path, monkeypatch):
    for name in (launch.MARKER, "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UserError, match=r"^train\.accelerate_config: file not found: nope\.yaml$"):
        launch.relaunch(2, "nope.yaml", tmp_path)
    (tmp_path / "bad.yaml").write_text(MULTI_NODE + "bogus_key: 1\n")
    with pytest.raises(UserError) as e:
        launch.relaunch(2, "bad.yaml", tmp_path)  # accelerate rejects the file before starting anything
    msg = str(e.value)
    assert msg.startswith("train.accelerate_config (bad.yaml): accelerate launch refused it:") and "bogus_key" in msg
    assert "\n" not in msg
    assert launch.MARKER not in os.environ


@pytest.mark.parametrize("precision,expected", [("fp32", "no"), ("bf16", "bf16")])
def test_train_precision_decides_under_the_launcher(tmp_path, monkeypatch, precision, expected):
    """The launcher exports ACCELERATE_MIXED_PRECISION; TrainingArguments falls back to it when neither
    bf16 nor fp16 is set, so a config file's `mixed_precision: bf16` would silently turn an fp32 run
    into bf16. `--mixed_precision no` (always passed) leaves train.precision the only switch."""
    from accelerate.utils.launch import prepare_multi_gpu_env

    from lmtune import params
    from lmtune.train import trainer

    cfg = tmp_path / "multi-node.yaml"
    cfg.write_text(MULTI_NODE)  # mixed_precision: bf16
    env = prepare_multi_gpu_env(accelerate_view(launch.launch_args(2, str(cfg), {})))
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", env["ACCELERATE_MIXED_PRECISION"])
    tp = params.load().train.model_copy(update={"precision": precision})
    assert trainer.training_arguments(tp, 0, tmp_path / "out").mixed_precision == expected
    # Without the flag, the file's bf16 would win over train.precision: fp32.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert trainer.training_arguments(tp, 0, tmp_path / "out").mixed_precision == "bf16"


def test_launch_args_in_full():
    assert launch.launch_args(2, None, {}) == [
        "--num_processes", "2", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--multi_gpu", "--num_machines", "1", "--main_process_port", "0", "-m", "stages.train"]
    env = {launch.MACHINE_RANK: "1", launch.MAIN_PROCESS_IP: "10.0.0.7"}
    assert launch.launch_args(4, "c.yaml", env) == [
        "--num_processes", "4", "--mixed_precision", "no", "--dynamo_backend", "no", "--config_file", "c.yaml",
        "--machine_rank", "1", "--main_process_ip", "10.0.0.7", "-m", "stages.train"]
    # Set but empty (a scheduler variable that expanded to nothing): not passed.
    assert "--machine_rank" not in launch.launch_args(2, None, {launch.MACHINE_RANK: "", launch.MAIN_PROCESS_IP: ""})
    assert launch.launch_args(2, None, {launch.MAIN_PROCESS_IP: "h"})[-4:-2] == ["--main_process_ip", "h"]


@pytest.fixture
def launcher(monkeypatch):
    """relaunch without starting processes: accelerate's launch_command records what it was asked, and
    `fail` (an exception) makes it fail as accelerate would."""
    import accelerate.commands.launch as acc

    for name in (launch.MARKER, "LOCAL_RANK", "WORLD_SIZE", launch.MACHINE_RANK, launch.MAIN_PROCESS_IP):
        monkeypatch.delenv(name, raising=False)
    calls, state = [], {"fail": None}

    def launch_command(ns):
        calls.append((ns, os.environ.get(launch.MARKER)))
        if state["fail"] is not None:
            raise state["fail"]

    monkeypatch.setattr(acc, "launch_command", launch_command)
    deaths = []
    monkeypatch.setattr(launch, "die_with_launcher", lambda: deaths.append(1))
    return calls, state, deaths


def test_relaunch_runs_accelerates_launcher_then_exits(launcher, tmp_path, capsys):
    calls, _, _ = launcher
    assert launch.relaunch(1, None, tmp_path) is None and calls == []  # one process: trains here
    with pytest.raises(SystemExit) as e:
        launch.relaunch(2, None, tmp_path)
    assert e.value.code == 0
    (ns, marker), = calls
    assert (ns.num_processes, ns.multi_gpu, ns.module, ns.training_script) == (2, True, True, "stages.train")
    assert marker == "1" and launch.MARKER not in os.environ  # the launched processes see it, this one no more
    assert capsys.readouterr().out == "train: accelerate launch " + " ".join(launch.launch_args(2, None, {})) + "\n"
    (tmp_path / "c.yaml").write_text(MULTI_NODE)
    with pytest.raises(SystemExit):
        launch.relaunch(3, "c.yaml", tmp_path)
    assert calls[-1][0].config_file == str(tmp_path / "c.yaml") and calls[-1][0].num_processes == 3


def test_relaunch_turns_a_failed_launch_into_one_line(launcher, tmp_path):
    import subprocess

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    _, state, _ = launcher
    state["fail"] = ChildFailedError("stages.train", {r: ProcessFailure(r, 100 + r, code, "/nonexistent")
                                                      for r, code in ((0, 3), (1, 1), (2, 3))})
    with pytest.raises(UserError, match=r"^train failed under accelerate launch \(2 processes, exit code 1/3\); "
                                        r"the processes' own errors are above$"):
        launch.relaunch(2, None, tmp_path)
    assert launch.MARKER not in os.environ
    state["fail"] = subprocess.CalledProcessError(7, ["deepspeed"])
    with pytest.raises(UserError, match=r"^train failed under accelerate launch \(2 processes, exit code 7\); "
                                        r"the processes' own errors are above$"):
        launch.relaunch(2, None, tmp_path)
    state["fail"] = ValueError("bad\n   flags  here")
    with pytest.raises(UserError, match=r"^train\.num_processes: accelerate launch refused it: bad flags here$"):
        launch.relaunch(2, None, tmp_path)
    assert launch.MARKER not in os.environ


def test_a_launched_process_trains_and_dies_with_our_launcher_only(launcher, tmp_path, monkeypatch):
    calls, _, deaths = launcher
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launch.relaunch(2, "missing.yaml", tmp_path) is None  # launched: no launch, no config check
    assert deaths == [] and calls == []  # started by hand (torchrun): the parent-death signal is not ours to set
    monkeypatch.setenv(launch.MARKER, "1")
    assert launch.relaunch(2, None, tmp_path) is None
    assert deaths == [1] and calls == []
    with pytest.raises(UserError, match="WORLD_SIZE=2"):
        launch.relaunch(3, None, tmp_path)


def test_the_launch_line_is_out_before_the_processes_start(launcher, tmp_path, monkeypatch):
    """The launched processes write to the same terminal: the command line is flushed before they start."""
    import sys

    import accelerate.commands.launch as acc

    out, seen = FlushedStdout(), []
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(acc, "launch_command", lambda ns: seen.append(out.flushed))
    with pytest.raises(SystemExit):
        launch.relaunch(2, None, tmp_path)
    assert seen == ["train: accelerate launch " + " ".join(launch.launch_args(2, None, {})) + "\n"]
