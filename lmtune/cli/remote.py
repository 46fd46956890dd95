"""Check a DVC remote before pushing or pulling: one line for a wrong endpoint or a missing bucket.

    python -m lmtune.cli.remote check [-r NAME]        # `make remote-check`
    python -m lmtune.cli.remote push [dvc push args]   # `make push`: check, then `dvc push`; with
                                                   # --run-cache also the outputs the records name
    python -m lmtune.cli.remote pull [dvc pull args]   # `make pull`: check, then `dvc pull`

Why a wrapper: what DVC 3.67 + dvc-s3 3.3 print on their own, measured on the tiny pipeline here:
- wrong endpoint, `dvc pull`: 3 min 20 s of retries, then 2 ERROR lines and a "Missing cache files"
  WARNING pair per output (18 lines); `dvc push`: `ERROR: unexpected error - Could not connect to the
  endpoint URL: ...` after ~7 s, plus a "Having any troubles?" footer;
- missing bucket, `dvc push`/`dvc pull`: `ERROR: unexpected error - The specified bucket does not exist:
  ...` (clear enough, but it names neither the bucket nor the remote), while `dvc status -c` reports
  "Cache and remote 'NAME' are in sync." with exit code 0.
This check takes ~2.5 s and prints one line naming the remote, its url and endpoint, and what is wrong.
The remote is resolved by DVC itself (.dvc/config, .dvc/config.local, AWS env vars / profiles), so the
check sees exactly what `dvc push` would use.
"""
import subprocess
import sys

from lmtune.errors import UserError, cli

# Object stores whose first path component is a bucket/container that DVC does not create.
BUCKETED = {"s3", "gs", "gcs", "azure", "abfs", "az", "oss"}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _remote_name(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a in ("-r", "--remote") and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--remote="):
            return a.split("=", 1)[1]
    return None


def _fail_fast(remote) -> None:
    """S3: one attempt and a 5 s connect timeout (botocore and s3fs each retry 5 times by default,
    which made the wrong-endpoint check take 38 s here), unless the remote sets its own timeout."""
    if remote.fs.protocol != "s3":
        return
    kwargs = remote.fs.fs_args.setdefault("config_kwargs", {})
    kwargs["retries"] = {"max_attempts": 1, "mode": "standard"}
    kwargs.setdefault("connect_timeout", 5)
    remote.fs.fs.retries = 1


def check(name: str | None = None) -> str:
    """Raise UserError (one line) unless the remote is reachable and its bucket exists; return a summary."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo() as repo:
            remote = repo.cloud.get_remote(name)
    except DvcException as e:
        raise UserError(f"DVC remote: {_one_line(e)}") from None  # DVC's own words say how to add one
    url = remote.fs.unstrip_protocol(remote.path)
    endpoint = remote.config.get("endpointurl")
    where = f"remote '{remote.name}' ({url}" + (f" at {endpoint})" if endpoint else ")")
    _fail_fast(remote)
    bucket = remote.path.split("/")[0] if remote.fs.protocol in BUCKETED else None
    try:
        # A bucket must exist already (listing it raises FileNotFoundError otherwise; `exists` would
        # swallow a connection error as False); a folder (local, ssh, ...) is created by the first push.
        if bucket:
            remote.fs.ls(bucket, detail=False)
        else:
            remote.fs.exists(remote.path)  # reachable at all (ssh host, mount)
    except FileNotFoundError:
        raise UserError(f"{where}: bucket '{bucket}' does not exist (create it, or fix the url with "
                        f"`dvc remote modify {remote.name} url ...`)") from None
    except Exception as e:  # botocore/aiohttp/paramiko: each library has its own error types
        raise UserError(f"{where}: cannot reach it: {_one_line(e)}") from None
    return f"{where}: reachable" + (f", bucket '{bucket}' exists" if bucket else "")


def push_run_cache_outputs(name: str | None) -> str:
    """Push the outputs that the local run-cache records name, beside the records themselves.

    Why: DVC 3.67's `dvc push --run-cache` sends only the records (`runs/`): its index-based push
    computes the records' objects and then drops them (dvc/repo/push.py), and `dvc push`/`dvc exp push`
    send cached outputs only. A stage restores from the run-cache only when every output it recorded
    is at hand, including the git-tracked ones (metrics, curves) that the run-cache keeps in the DVC
    cache, so without this a teammate's `dvc exp run --pull` finds "Missing cache files" and trains again.
    """
    from pathlib import Path

    from dvc.repo import Repo

    with Repo() as repo:
        runs = Path(repo.stage_cache.cache_dir)
        records = [(p.parent.name, p.name) for p in runs.glob("*/*/*") if p.is_file()]  # runs/ab/KEY/VALUE
        used = repo.stage_cache.get_used_objs(records, remote=name)
        objs = set().union(*used.values()) if used else set()
        result = repo.cloud.push(objs, remote=name)
    note = f"run-cache: outputs of {len(records)} recorded stage runs pushed ({len(result.transferred)} objects sent)"
    if result.failed:  # e.g. removed from the local cache by `dvc gc`: those stages just run again elsewhere
        note += f"; {len(result.failed)} not in the local cache, not pushed"
    return note


@cli
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("check", "push", "pull"):
        raise UserError("usage: python -m lmtune.cli.remote check|push|pull [-r NAME] [dvc push/pull options]")
    command, rest = argv[0], argv[1:]
    name = _remote_name(rest)
    print(check(name), flush=True)
    if command == "check":
        return
    code = subprocess.run([sys.executable, "-m", "dvc", command, *rest]).returncode
    if code == 0 and command == "push" and "--run-cache" in rest:
        print(push_run_cache_outputs(name), flush=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
