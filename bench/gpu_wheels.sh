#!/usr/bin/env bash
# The wheels `bench/gpu_device.sh` installs on a GPU machine that cannot reach a package registry.
#
# That machine's python3 (3.12) already has torch, transformers, accelerate, peft, pandas, pyarrow,
# numpy, tokenizers, safetensors, huggingface_hub, fsspec, xxhash, pyyaml, requests, tqdm, psutil,
# attrs, pathspec, tabulate, colorama, nvidia-ml-py and the other packages in the device docs' list.
# This fetches what the pipeline imports beyond those, pinned to the versions of requirements.txt
# (and the versions pip resolved for their dependencies here), into .whl/ (git-ignored through
# .git/info/exclude and .gitignore), about 9 MiB, well under the 64 MiB a device call may carry:
#   - the params schema: pydantic (+ pydantic-core, annotated-types, typing-inspection, and a
#     typing-extensions new enough for pydantic-core; newer versions keep the old names);
#   - data: datasets (+ dill, multiprocess) and evaluate (the metric modules);
#   - the train stage's curves: dvclive and exactly what `from dvclive import Live` imports when used as
#     lmtune.train.trainer.write_curves uses it (dvc and its helpers; read off sys.modules after a real run);
#   - GPT-2's BPE ranks: openai-whisper, an sdist only, built here into a pure-Python wheel.
# datasets 5.2.0 asks for pyarrow >= 24; 5.0.0 (in .whl/alt/) only for >= 21 and fits
# huggingface_hub < 2: gpu_device.sh installs it instead when the machine's pyarrow is older than 24.
#
#   bash bench/gpu_wheels.sh                      # cp312 wheels for the GPU machine
#   PYVER=3.11 WHEEL_DIR=/tmp/w bash bench/gpu_wheels.sh   # the same set for this machine's python (tests)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${WHEEL_DIR:-.whl}
PYVER=${PYVER:-3.12}
if [ -x .venv/bin/python ]; then PIP=(.venv/bin/python -m pip); else PIP=(python3 -m pip); fi

PKGS=(
  pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0
  datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 evaluate==0.4.6
  dvclive==3.49.1 dvc==3.67.1 dvc-data==3.18.3 dvc-objects==5.2.0 dvc-http==2.32.0
  dvc-render==1.0.2 dvc-studio-client==0.23.0 scmrepo==3.6.2 dulwich==1.2.21
  configobj==5.0.9 diskcache==5.6.3 dpath==2.2.0 flatten-dict==0.5.0 "flufl.lock==9.2.0"
  funcy==2.1 orjson==3.13.0 atpublic==9.0.0 pygtrie==2.6.2 "ruamel.yaml==0.19.1" sqltrie==0.11.3
  voluptuous==0.16.0 wcwidth==0.9.4 "zc.lockfile==4.0" platformdirs==4.14.8
)
ALT=(datasets==5.0.0)

rm -rf "$DEST"
mkdir -p "$DEST/alt"
# The device docs' recipe: binary wheels only, for CPython $PYVER on manylinux x86-64, no dependencies.
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# (grep: this machine's pip config names local index folders that may be absent; pip warns about each.)
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
fetch() { quiet "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
            "${platforms[@]}" "$@"; }
fetch -d "$DEST" "${PKGS[@]}"
fetch -d "$DEST/alt" "${ALT[@]}"
# No wheel on the index: build one from the sdist (pure Python: py3-none-any, fits any CPython).
quiet "${PIP[@]}" wheel -q --no-deps -w "$DEST" openai-whisper==20250625

n=$(ls "$DEST"/*.whl | wc -l)
echo "gpu_wheels: $n wheels + $(ls "$DEST"/alt/*.whl | wc -l) alternative in $DEST ($(du -sh "$DEST" | cut -f1))"
