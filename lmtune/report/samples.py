"""Samples as people read them: the model card's base-beside-tuned tables, and `lmtune.cli.generate`'s lines.

A sample is a generation (`text`, with `strategy` and `settings`, and `input` when the prompt was wrapped
in a template) or a classifier's prediction (`label`, `probabilities`), as lmtune.eval.generation makes it.
"""


def md_cell(text: str) -> str:
    """Text as one markdown table cell: pipes and HTML escaped, line breaks kept as <br>."""
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("&", "&amp;").replace("<", "&lt;")
    return text.replace("\r", "").replace("\n", "<br>") or " "


def _settings(kw: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kw.items())


def generations_markdown(samples: list[dict]) -> list[str]:
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


def predictions_markdown(samples: list[dict]) -> list[str]:
    """One row per text: the base model's label (its untrained, seeded head) beside the tuned one."""
    def shown(label, probs):
        return f"**{label}** ({probs[label]:.3f})"

    return ["| text | base | tuned |", "|---|---|---|",
            *[f"| {md_cell(s['prompt'])} | {shown(s['base_label'], s['base_probabilities'])} | "
              f"{shown(s['label'], s['probabilities'])} |" for s in samples], ""]


def markdown(samples: list[dict]) -> list[str]:
    """Paired samples (lmtune.eval.generation.pair) as markdown, base beside tuned."""
    return generations_markdown(samples) if samples and "text" in samples[0] else predictions_markdown(samples)


def line(s: dict) -> str:
    """A sample as `lmtune.cli.generate` prints it."""
    if "text" in s:
        return f"[{s['strategy']}] {s.get('input', s['prompt'])}{s['text']}\n"
    return f"[{s['label']}] {s['prompt']}  {s['probabilities']}"
