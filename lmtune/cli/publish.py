"""Publish models/export/ to the Hugging Face hub: `python -m lmtune.cli.publish user/name [--private]
[--revision BRANCH] [--dry-run]` (= `make publish REPO=user/name ARGS=...`).

Creates the model repo if it does not exist and uploads the export folder as one commit, through
huggingface_hub (`create_repo`, `create_branch`, `upload_folder`). The token comes from the usual
places only (`HF_TOKEN`, or `hf auth login`'s stored token), never from params.yaml.

It refuses, in one line and exit 2, when the export is missing or `dvc status` is not clean: a
published model is then always the one dvc.lock describes (its hashes are in the model card).
`--dry-run` checks the same things, then prints the files it would upload and the card, and touches
no network.
"""
import argparse
import subprocess
import sys
from pathlib import Path

from lmtune import paths
from lmtune.checks import one_line
from lmtune.errors import UserError, cli

NEEDED = ("config.json", "README.md")  # + safetensors weights; the card is the repo's README


def check_repo_id(repo_id: str) -> str:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise UserError(f"REPO: {repo_id!r} is not a valid hub repo id ({one_line(e)})") from None
    if repo_id.count("/") != 1:
        raise UserError(f"REPO: {repo_id!r} must be 'user/name' or 'organisation/name'")
    return repo_id


def _shown(path: Path) -> Path:
    path = Path(path)
    return path.relative_to(paths.ROOT) if path.is_relative_to(paths.ROOT) else path


def export_files(export: Path) -> list[Path]:
    """The files to upload (relative paths, sorted); refuses a missing or incomplete export."""
    export = Path(export)
    hint = "run `dvc repro` (or `dvc pull` for the team's copy) first"
    if not export.is_dir():
        raise UserError(f"{_shown(export)}: no export to publish; {hint}")
    missing = [f for f in NEEDED if not (export / f).is_file()]
    if not list(export.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise UserError(f"{_shown(export)}: incomplete export (no {', '.join(missing)}); {hint}")
    return sorted(p.relative_to(export) for p in export.rglob("*") if p.is_file())


def pipeline_changes(root: Path) -> dict:
    """`dvc status` through DVC's own API: {} when every stage matches dvc.lock."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.status()


def check_up_to_date(root: Path) -> None:
    changes = pipeline_changes(root)
    if changes:
        stages = ", ".join(sorted(k.split(":")[-1] for k in changes))
        raise UserError(f"dvc status is not clean (changed: {stages}), so the export may not be the one dvc.lock "
                        "describes: run `dvc repro` (and commit dvc.lock) before publishing")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GB"


def git_revision(root: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def plan(repo_id: str, export: Path, files: list[Path], private: bool, revision: str | None) -> str:
    """What an upload would do: the target, every file with its size, and the model card."""
    sizes = [(export / f).stat().st_size for f in files]
    lines = [f"would upload {len(files)} files ({_size(sum(sizes))}) from {_shown(export)} to "
             f"https://huggingface.co/{repo_id} ({'private' if private else 'public'}, branch "
             f"{revision or 'main'}; the repo is created if missing)"]
    lines += [f"  {size:>12,d}  {f}" for f, size in zip(files, sizes)]
    lines += ["", "--- README.md (model card) ---", (export / "README.md").read_text(encoding="utf-8").rstrip()]
    return "\n".join(lines)


def upload(repo_id: str, export: Path, private: bool, revision: str | None, token: str) -> str:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, folder_path=export, repo_type="model", revision=revision,
                             commit_message=f"Upload {_shown(export)} from git {git_revision(paths.ROOT)} (dvc status clean)")
    return f"published {_shown(export)} to {url} ({info.commit_url})"


@cli
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("repo", metavar="REPO", help="hub model repo id, user/name")
    ap.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    ap.add_argument("--revision", help="branch to upload to (created from main if missing); default main")
    ap.add_argument("--dry-run", action="store_true", help="check, then print the files and the card; no network")
    a = ap.parse_args(argv)
    repo_id = check_repo_id(a.repo)
    files = export_files(paths.EXPORT)
    check_up_to_date(paths.ROOT)
    if a.dry_run:
        print(plan(repo_id, paths.EXPORT, files, a.private, a.revision))
        return
    from huggingface_hub import constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if constants.HF_HUB_OFFLINE:  # the Makefile keeps every other target offline; `make publish` lifts it
        raise UserError("HF_HUB_OFFLINE is set: publish with `make publish REPO=...` or HF_HUB_OFFLINE=0")
    token = get_token()  # HF_TOKEN, else the token `hf auth login` stored
    if not token:
        raise UserError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (never in params.yaml)")
    try:
        print(upload(repo_id, paths.EXPORT, a.private, a.revision, token))
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as e:
        raise UserError(f"upload to {repo_id} failed: {one_line(e)}") from None


if __name__ == "__main__":
    sys.exit(main())
