"""User-facing errors: one clear line naming the key, file, row or column at fault."""
import functools
import os
import sys
import traceback
from pathlib import Path


class UserError(Exception):
    """Bad input from the user (params, data, model folder). Printed as one line, exit code 2."""


def _git_tracked_outputs(dvc_yaml: Path) -> list[str]:
    """Top-level folders/files of the outputs dvc.yaml keeps in git (`cache: false`), e.g. ["metrics"]."""
    import yaml

    stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {})
    found = set()
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for out in stage.get(kind) or []:
                if isinstance(out, dict):
                    path, opts = next(iter(out.items()))
                    if (opts or {}).get("cache") is False:
                        found.add(Path(path).parts[0])
    return sorted(found)


def dvc_restore_hint(env=os.environ, cwd: Path | None = None) -> str | None:
    """After a stage failed under `dvc exp run` / `dvc repro`: how to get the last commit's workspace back.

    DVC removes a stage's outputs before it runs the command (dvc's Stage.run calls remove_outs first), and
    `dvc exp run -S` has already written its values into params.yaml; DVC undoes neither when the stage fails.
    Cached outputs come back with `dvc checkout` once dvc.lock is the committed one; params.yaml and the
    git-tracked outputs come back with git. None outside DVC, and for a `--temp` or queued run: those run in a
    copy under .dvc/tmp/exps (DVC_ROOT still names the workspace, the stage's folder is the copy), and the
    workspace is untouched.
    """
    root, stage = env.get("DVC_ROOT"), env.get("DVC_STAGE")
    here = Path.cwd() if cwd is None else Path(cwd)
    if not root or not stage or here.resolve() != Path(root).resolve():
        return None
    try:
        tracked = _git_tracked_outputs(here / "dvc.yaml")
    except Exception:  # noqa: BLE001 - a hint must never hide the error it follows
        tracked = []
    if env.get("DVC_EXP_BASELINE_REV"):
        what = "`dvc exp run` wrote this experiment's values into params.yaml, and DVC"
        files = ["params.yaml", "dvc.lock", *tracked]
        keep = ""
    else:
        what, files, keep = "DVC", ["dvc.lock", *tracked], " (params.yaml keeps your edits)"
    return (f"note: {what} removed stage '{stage.split(':')[-1]}''s outputs before running it; back to the last "
            f"commit{keep}: git checkout HEAD -- {' '.join(files)} && dvc checkout")


def cli(main):
    """Wrap a stage's main(): a UserError becomes one line on stderr and exit 2, not a traceback; under DVC a
    failure is followed by the command that restores the workspace DVC changed (dvc_restore_hint)."""

    @functools.wraps(main)
    def run(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            _hint()
            sys.exit(2)
        except Exception:
            traceback.print_exc()
            _hint()  # after the traceback, where it is read
            sys.exit(1)

    return run


def _hint() -> None:
    hint = dvc_restore_hint()
    if hint:
        print(hint, file=sys.stderr)
