#!/usr/bin/env bash
# `make gpu-check` on a GPU machine that cannot reach a package registry (its python3 has torch,
# transformers, accelerate, peft, pandas, pyarrow, ... but not datasets, pydantic, evaluate, dvclive):
# install the wheels that `bash bench/gpu_wheels.sh` put in .whl/ into $SITE, then run the check.
#   bash bench/gpu_device.sh [gpu_check args]      # exit code: bench/gpu_check.py's (3: wheels missing)
set -uo pipefail
cd "$(dirname "$0")/.."
# A path with "site-packages" in it: dill (datasets' fingerprints) pickles a module from anywhere else by value
# (that failed for a pyarrow outside site-packages in a test here; a precaution for the wheels' modules).
SITE=${SITE:-/tmp/gpu-check/site-packages}
PY=${PY:-python3}
WHEELS=${WHEEL_DIR:-.whl}
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
  echo "gpu_device: no wheels in .whl/ (run 'bash bench/gpu_wheels.sh' where pip works, and carry .whl)" >&2
  exit 3
fi
# datasets 5.2.0 declares pyarrow >= 24; on an older pyarrow take 5.0.0 (>= 21) from .whl/alt instead.
if ! "$PY" -c 'import sys, pyarrow; sys.exit(int(pyarrow.__version__.split(".")[0]) < 24)'; then
  echo "gpu_device: pyarrow < 24 here: installing datasets from $WHEELS/alt" >&2
  wheels=($(printf '%s\n' "${wheels[@]}" | grep -v '/datasets-') "$WHEELS"/alt/datasets-*.whl)
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" \
  || { echo "gpu_device: installing the wheels failed" >&2; exit 3; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log="${OUT:-/tmp}/gpu_check.log"
"$PY" -m bench.gpu_check "$@" 2>&1 | tee "$log"
