"""What the two language-model tasks (causal_lm, instruction) share: the causal-LM head, loss-based
evaluation numbers, the generation config shipped with the export, and samples per decoding strategy."""
from lmtune.tasks.base import Task, md_cell


class LanguageModelTask(Task):
    primary_metric = ("perplexity", False)
    block_columns = (("n_tokens", "n_bytes"), ("nll",))
    peft_task_type = "CAUSAL_LM"
    pipeline_tag = "text-generation"
    sample_outputs = ("text",)
    scored = "text tokens"  # which tokens the loss and the card's numbers cover

    def model_class(self):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def prompt_for(self, fp, prompt: str) -> str | None:
        """The text the model is prompted with, or None to use the prompt as it is."""
        return None

    # ---- evaluate -------------------------------------------------------------------------------

    def evaluate(self, model, blocks, batch_size: int, label_names: list[str], *, tokenizer=None, autocast=None,
                 desc: str | None = None) -> dict:
        """Loss, perplexity, next-token accuracy over the scored tokens (labels != -100: an instruction
        model is scored on its responses only); with the tokenizer also bits per byte and per-block sums."""
        from lmtune.eval import metrics

        byte_lengths = metrics.token_byte_lengths(tokenizer) if tokenizer is not None else None
        return metrics.evaluate_causal_lm(model, blocks, batch_size, byte_lengths=byte_lengths, autocast=autocast,
                                          desc=desc)

    def summary(self, name: str, m: dict) -> str:
        return (f"{name:5s} loss {m['loss']:.4f}  perplexity {m['perplexity']:.2f}  accuracy {m['accuracy']:.4f}"
                f"  ({m['n_tokens']} tokens)")

    def metrics_table(self, ev: dict) -> list[str]:
        return ["| model | loss | perplexity | next-token accuracy | tokens |", "|---|---|---|---|---|",
                *[f"| {k} | {v['loss']:.4f} | {v['perplexity']:.2f} | {v['accuracy']:.4f} | {v['n_tokens']} |"
                  for k, v in ev.items()]]

    def card_metrics(self, m: dict) -> list[dict]:
        return [{"type": "perplexity", "name": f"Perplexity ({self.scored})", "value": round(m["perplexity"], 4)},
                {"type": "accuracy", "name": f"Next-token accuracy ({self.scored})", "value": round(m["accuracy"], 4)}]

    # ---- samples --------------------------------------------------------------------------------

    def prepare_export(self, model, tokenizer, gp) -> None:
        from transformers import GenerationConfig

        from lmtune.eval import generation

        model.generation_config = GenerationConfig(
            **generation.strategies(gp)["top_p"], max_new_tokens=gp.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )

    def shipped_defaults(self, model) -> list[str]:
        gc = model.generation_config
        return [f"`generation_config.json` ships top-p sampling as the default: do_sample={gc.do_sample}, "
                f"top_p={gc.top_p}, top_k={gc.top_k}, max_new_tokens={gc.max_new_tokens}. `pipeline()` and "
                "`generate()` use these unless you pass your own (e.g. `do_sample=False` for greedy)."]

    def samples(self, model, tokenizer, gp, fp, placement, strategy: str = "all", raw: bool = False) -> list[dict]:
        from lmtune.eval import generation

        fmt = None if raw or self.prompt_for(fp, "") is None else (lambda prompt: self.prompt_for(fp, prompt))
        return generation.samples(model, tokenizer, gp, placement, format_prompt=fmt, only=strategy)

    def samples_markdown(self, samples: list[dict]) -> list[str]:
        """Per prompt, one row per decoding strategy: the base model's continuation beside the tuned one."""
        out = []
        for prompt in dict.fromkeys(s["prompt"] for s in samples):
            rows = [s for s in samples if s["prompt"] == prompt]
            shown = rows[0].get("input", prompt)
            out += [f"Prompt: `{prompt}`" + (f" (sent as `{shown!r}`)" if shown != prompt else ""), "",
                    "| strategy | settings | base | tuned |", "|---|---|---|---|",
                    *[f"| {s['strategy']} | {md_cell(_settings(s['settings']))} | {md_cell(s['base_text'])} | "
                      f"{md_cell(s['text'])} |" for s in rows], ""]
        return out

    def show_sample(self, s: dict) -> str:
        return f"[{s['strategy']}] {s.get('input', s['prompt'])}{s['text']}\n"


def _settings(kw: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kw.items())
