"""The committed accelerate configs (configs/accelerate/): each parses and validates the way `accelerate
launch` would take it from the train stage, without starting a process.

Per file: accelerate's own config loader (unknown top-level keys are an error there); every key of its
fsdp_config / deepspeed_config is an `accelerate launch` option (the loader does not check those, and a
misspelt key would be silently ignored); accelerate's launch validation of the exact command the train
stage builds (lmtune.train.launch); the launcher's environment for the processes, and from it
accelerate's FSDP plugin (which rejects a bad state dict type, wrap policy or version) or its DeepSpeed
settings; and params validation of `train.accelerate_config` naming it. tests/test_fsdp.py trains with
fsdp2.yaml; DeepSpeed, offload and several machines are CUDA/cluster only and not run here.
"""
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

from lmtune import params
from lmtune.train import launch

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / params.ACCELERATE_CONFIGS).glob("*.yaml"))
# What each file is for: the layouts docs/team-and-scale.md's table names.
LAYOUTS = {
    "ddp.yaml": ("MULTI_GPU", 1), "fsdp2.yaml": ("FSDP", 1), "fsdp2-offload.yaml": ("FSDP", 1),
    "deepspeed-zero2.yaml": ("DEEPSPEED", 1), "deepspeed-zero3.yaml": ("DEEPSPEED", 1),
    "multi-node-fsdp2.yaml": ("FSDP", 2),
}


def launcher_view(path: Path, num_processes: int):
    """accelerate's merged launch settings for the command the train stage runs with this file."""
    args = launch.launch_args(num_processes, str(path), {})
    return _validate_launch_command(launch_command_parser().parse_args(args))


def test_every_layout_is_committed():
    assert sorted(p.name for p in CONFIGS) == sorted(LAYOUTS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_validates(path, monkeypatch):
    kind, machines = LAYOUTS[path.name]
    config = load_config_from_file(str(path))  # accelerate's loader: unknown top-level keys raise
    assert config.distributed_type.value == kind and config.num_machines == machines
    options = {a.dest for a in launch_command_parser()._actions}
    raw = yaml.safe_load(path.read_text())
    for section in ("fsdp_config", "deepspeed_config"):
        unknown = sorted(set(raw.get(section) or {}) - options)
        assert not unknown, f"{path.name}: {section} keys accelerate launch does not know: {unknown}"
    # mixed_precision and dynamo: train.precision and train.torch_compile decide them (launch.py passes "no").
    assert "mixed_precision" not in raw and "dynamo_config" not in raw and "num_processes" not in raw

    n = 8 * machines
    args, defaults, _ = launcher_view(path, n)
    assert args.num_processes == n and args.num_machines == machines and args.mixed_precision == "no"
    if kind == "FSDP":
        assert args.use_fsdp and str(args.fsdp_version) == "2"
        env = prepare_multi_gpu_env(args)  # what the launched processes see
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        from accelerate.utils import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin()  # validates the values
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        assert "SHARDED_STATE_DICT" in str(plugin.state_dict_type)  # resumable sharded checkpoints
        # FSDP2: OffloadPolicy() (none) or CPUOffloadPolicy
        assert (type(plugin.cpu_offload).__name__ == "CPUOffloadPolicy") == (path.name == "fsdp2-offload.yaml")
    elif kind == "DEEPSPEED":
        assert args.use_deepspeed and int(args.zero_stage) == int(path.name[-6])
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as deepspeed_launcher sets it
        _, env = prepare_deepspeed_cmd_env(args)
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == path.name[-6]
        assert float(raw["deepspeed_config"]["gradient_clipping"]) == params.load(ROOT / "params.yaml").train.max_grad_norm
    else:
        assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed

    # As a param: the path a user passes with -S train.accelerate_config=...
    p = params.load(ROOT / "params.yaml")
    rel = path.relative_to(ROOT).as_posix()
    assert params.TrainParams.model_validate({**p.train.model_dump(), "accelerate_config": rel}).accelerate_config == rel


@pytest.mark.parametrize("bad", ["accelerate/fsdp2.yaml", "/etc/fsdp2.yaml", "configs/accelerate/../x.yaml", "fsdp2.yaml"])
def test_a_config_outside_the_tracked_folder_is_refused(bad):
    train = params.load(ROOT / "params.yaml").train.model_dump()
    with pytest.raises(ValueError, match="train.accelerate_config must be a file under configs/accelerate/"):
        params.TrainParams.model_validate({**train, "accelerate_config": bad})


def test_the_train_stage_depends_on_the_config_folder():
    """Editing a config's content reruns train (checked with `dvc status` on a tiny repo when this was written:
    `changed deps: modified: configs/accelerate`)."""
    train = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    assert params.ACCELERATE_CONFIGS.as_posix() in train["deps"]
