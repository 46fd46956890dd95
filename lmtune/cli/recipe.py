"""Run a seed recipe as a DVC experiment: `python -m lmtune.cli.recipe NAME [-S key=value ...] [dvc args]`.

A recipe is `recipes/<NAME>.yaml`: params overrides on top of params.yaml. It becomes
`dvc exp run -n NAME -S key=value ...`, so every recipe shows by name in `dvc exp show` beside the
others. Extra `-S key=value` flags follow the recipe's and replace its value for the same key; other
arguments (e.g. `-f`, `--temp`, `--queue`) go to `dvc exp run` unchanged. `--dry-run` prints the command.
The merged params are validated before DVC runs, so a bad recipe fails in one line naming the key.
"""
import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from lmtune import params, paths, tasks
from lmtune.errors import UserError, cli

RECIPES = paths.ROOT / "recipes"
# Strings Hydra reads back as the same string unquoted (no numbers, keywords or grammar characters).
PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_\-./]*")


def known(root: Path = RECIPES) -> list[str]:
    return sorted(p.stem for p in Path(root).glob("*.yaml"))


def load(name: str, root: Path = RECIPES) -> dict:
    path = Path(root) / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown recipe {name!r}; known recipes: {', '.join(known(root))}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of params overrides")
    return raw


def deep_update(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def committed_params(params_path: Path = paths.PARAMS) -> dict:
    """params.yaml as committed at git HEAD (the defaults a recipe applies to), else the file itself.

    Not the workspace file: after one `dvc exp run` it holds that experiment's values, which must
    not leak into the next recipe (e.g. rte's lora.enabled into emotion)."""
    params_path = Path(params_path)
    try:
        text = subprocess.run(["git", "show", f"HEAD:./{params_path.name}"], cwd=params_path.parent,
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = params_path.read_text(encoding="utf-8")
    return yaml.safe_load(text)


def merged(name: str, base: dict | None = None, root: Path = RECIPES) -> params.Params:
    """The committed params.yaml with the recipe applied, validated by the schema and by its task's own
    checks (errors name the key)."""
    base = committed_params() if base is None else base
    source = f"recipes/{name}.yaml on params.yaml"
    return tasks.validate(deep_update(base, load(name, root)), source)[0]


def dotted(overrides: dict, prefix: str = "") -> dict:
    """{"train": {"learning_rate": 2e-5}} -> {"train.learning_rate": 2e-5}; lists are values."""
    out = {}
    for k, v in overrides.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(dotted(v, f"{key}."))
        else:
            out[key] = v
    return out


def hydra_value(v) -> str:
    """A value in the Hydra override grammar DVC's `-S` parses: strings always quoted."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, str):
        if "${" in v or "\\" in v:
            raise UserError(f"recipe value {v!r}: '${{' or a backslash cannot pass through dvc -S; set it in params.yaml")
        if PLAIN.fullmatch(v) and v.lower() not in ("null", "true", "false", "nan", "inf"):
            return v
        return "'" + v.replace("'", "\\'") + "'"
    raise UserError(f"recipe value {v!r}: unsupported type {type(v).__name__}")


def command(name: str, extra_sets: list[str] = (), dvc_args: list[str] = (), root: Path = RECIPES,
            base: dict | None = None, workspace: dict | None = None) -> list[str]:
    """The `dvc exp run` command for a recipe.

    `-S` for every key the recipe sets, plus every key where the workspace params.yaml differs from
    the committed one (reset to the committed value), so the run is the recipe on the defaults
    whatever ran before; extra `key=value` sets come last and replace the same keys.
    """
    base = committed_params() if base is None else base
    workspace = yaml.safe_load(paths.PARAMS.read_text(encoding="utf-8")) if workspace is None else workspace
    recipe = load(name, root)
    sets = {k: hydra_value(v) for k, v in dotted(recipe).items()}
    current = dotted(workspace)
    for k, v in dotted(deep_update(base, recipe)).items():
        if k not in sets and (k not in current or current[k] != v):
            sets[k] = hydra_value(v)
    for s in extra_sets:
        key, sep, value = s.partition("=")
        if not sep or not key:
            raise UserError(f"-S {s!r}: expected key=value")
        sets.pop(key, None)
        sets[key] = value
    cmd = ["dvc", "exp", "run", "-n", name]
    for k, v in sets.items():
        cmd += ["-S", f"{k}={v}"]
    return cmd + list(dvc_args)


@cli
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m lmtune.cli.recipe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help=f"one of: {', '.join(known())}")
    ap.add_argument("-S", "--set-param", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--dry-run", action="store_true", help="print the dvc command instead of running it")
    a, dvc_args = ap.parse_known_args(argv)
    merged(a.name)  # the recipe itself must validate before anything runs
    cmd = command(a.name, a.sets, dvc_args)
    if a.dry_run:
        print(shlex.join(cmd))
        return
    print(f"recipe {a.name}: {shlex.join(cmd)}", flush=True)
    sys.exit(subprocess.call(cmd, cwd=paths.ROOT))


if __name__ == "__main__":
    main()
