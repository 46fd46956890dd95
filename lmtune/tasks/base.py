"""The task contract: what truly differs between tasks, and nothing else.

A task says how a raw record becomes training examples (the source fields it reads, flatten, tokenize,
examples with their loss mask), which model head it trains (a transformers Auto class and its kwargs), how
a model is scored per evaluation unit, and what its metrics are (a declarative `Metric` each). Everything
else is shared and lives below or above this layer: padding and packing in `lmtune.data.chunking`, model
loading and LoRA in `lmtune.models`, sampling in `lmtune.eval.generation`, and every printed line, card
table and sample rendering in `lmtune.report`, derived from these declarations.

A task object is bound to the validated params it runs with (`tasks.load(p)`), so its hooks take only
the data they transform. Its own params are a section of params.yaml named after it (`causal_lm:`, ...),
validated by its `Settings` schema and read as `self.settings`.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Head:
    """The model a task trains: a transformers Auto class on top of the base LM."""

    auto_class: str       # e.g. "AutoModelForCausalLM"
    peft_task_type: str   # peft TaskType name for LoRA adapters
    pipeline_tag: str     # transformers' pipeline() task, also the hub's pipeline tag on the card
    generates: bool       # samples are generations per decoding strategy; else a label and its probabilities
    # A sequence classifier finds each row's last token through the pad id: eos stands in when the base has none.
    pad_is_eos: bool = False
    # Its pipeline takes a list of {role, content} messages (a chat model): the card's usage shows one.
    messages: bool = False


@dataclass(frozen=True)
class Metric:
    """One number of metrics/eval.json, as every console line, card table and model-index entry shows it."""

    key: str                          # its key in metrics/eval.json
    label: str                        # column header and console label
    fmt: str                          # format spec of its value (".4f", "d")
    higher_is_better: bool | None     # None: a count of what was scored, not a score
    ranks: bool = False               # the one metric that ranks runs (compare); exactly one per task
    hub: tuple[str, str] | None = None           # (the hub's metric type, its display name) on the card
    hub_args: tuple[tuple[str, str], ...] = ()   # e.g. (("average", "macro"),) for macro-F1
    # The per-unit columns of metrics/blocks.csv it is a ratio of (numerator, denominator), when it is one:
    # the paired comparisons recompute it from them.
    per_unit: tuple[str, str] | None = None


def token_metrics(scored: str) -> tuple[Metric, ...]:
    """Loss, perplexity (the ranking metric) and next-token accuracy over the tokens the loss sees, named on the
    card by `scored` ("text", "response", "assistant"): the language-model tasks' scores."""
    return (
        Metric("loss", "loss", ".4f", False, per_unit=("nll", "n_tokens")),
        Metric("perplexity", "perplexity", ".2f", False, ranks=True, hub=("perplexity", f"Perplexity ({scored} tokens)")),
        Metric("accuracy", "next-token accuracy", ".4f", True, hub=("accuracy", f"Next-token accuracy ({scored} tokens)")),
    )


class Task:
    """One task. Subclasses set the four declarations and implement the hooks that raise NotImplementedError."""

    name: str                    # the `task:` value in params.yaml (and the module lmtune/tasks/<name>.py)
    title: str                   # "Fine-tuned <title>" heads the model card
    head: Head
    metrics: tuple[Metric, ...]  # display order
    # metrics/blocks*.csv, one row per evaluation unit: columns the same for every model (what is scored;
    # first `doc` and `pos`, where the unit came from, which lmtune.eval.evaluation copies from data/chunks
    # and compare's document bootstrap reads), and per-model columns (written as base_<name>, tuned_<name>).
    block_columns: tuple[tuple[str, ...], tuple[str, ...]]
    # The schema of the task's own params section (params.yaml `<name>:`), a pydantic model.
    Settings: type

    def __init__(self, p, settings=None):
        self.p = p  # the validated params (lmtune.params.Params)
        # its own section, validated (`tasks.load` passes the Settings it already validated)
        self.settings = settings if settings is not None else self.Settings.model_validate(getattr(p, self.name))

    @classmethod
    def problems(cls, p) -> list[str]:
        """What this task needs of the shared params sections (e.g. chunk.mode), each message naming its key.
        Its own section is checked by `Settings`."""
        return []

    # ---- data: record -> flat row -> token ids -> examples ------------------------------------------

    def source_fields(self) -> list[str]:
        """The raw columns flatten reads (checked against the data before mapping)."""
        raise NotImplementedError

    def flatten_record(self, record: dict) -> dict:
        """One raw record -> the task's flat columns."""
        raise NotImplementedError

    def keep_flat(self, row: dict) -> bool:
        """Whether a flat row has something to learn from (flatten.drop_empty drops the others)."""
        raise NotImplementedError

    @staticmethod
    def document_text(row: dict) -> str | None:
        """A flat row as one text a language model is scored on (lm-evaluation-harness' rolling
        log-likelihood, lmtune.eval.harness); None when the task's model is no language model."""
        return None

    def token_features(self, dtype):
        """The datasets.Features of the tokenized columns (ids stored as `dtype`)."""
        raise NotImplementedError

    def tokenize_batch(self, tokenizer, batch: dict) -> dict:
        """Token ids per example (no special tokens from the tokenizer itself)."""
        raise NotImplementedError

    def examples(self, ds, pad_id: int, where: str):
        """Fixed-size examples (input ids, attention mask, labels with -100 where the loss looks away) of one
        tokenized split as an Arrow table; raises UserError (naming `where`) when none is left."""
        raise NotImplementedError

    # ---- model ----------------------------------------------------------------------------------------

    def model_kwargs(self) -> dict:
        """Extra from_pretrained arguments of the head (a classifier's labels)."""
        return {}

    def prompt(self, text: str) -> str:
        """The text a model is given at inference for a user's prompt (the template it was trained on)."""
        return text

    def evaluate(self, model, blocks, *, tokenizer, autocast=None, desc: str | None = None) -> dict:
        """The task's numbers for one model over the validation examples (every `metrics` key), with
        "blocks": the per-unit columns of `block_columns` (forward passes under `autocast()` when given)."""
        raise NotImplementedError


def ranking(task) -> Metric:
    """The metric that ranks a task's runs."""
    return next(m for m in task.metrics if m.ranks)
