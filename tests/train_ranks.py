"""Run the train stage (under `accelerate launch`) and let every process save the weights it ended with.

Only process 0 writes models/final, so this is the one way to see the other processes' weights:
`rank-<i>.safetensors` in the folder given as the first argument. Used by tests/test_distributed.py.
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, os.getcwd())  # the repo copy's stages/ and lmtune/, not this file's folder

from safetensors.torch import save_file  # noqa: E402

from lmtune.train import trainer as training  # noqa: E402 (lmtune.train.finetune calls training.train through the module)
from stages import train as stage  # noqa: E402

trained = []
run = training.train


def keep_trainer(*args, **kwargs):
    out = run(*args, **kwargs)
    trained.append(out[0])
    return out


training.train = keep_trainer
stage.main()
trainer = trained[0]
# clone: GPT-2 ties its input and output embeddings, and safetensors refuses shared storage.
weights = {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
save_file(weights, str(Path(sys.argv[1]) / f"rank-{trainer.args.process_index}.safetensors"))
