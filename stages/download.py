"""download: the dataset (original schema, train + validation) and the base model, saved locally."""
from lmtune import params, paths
from lmtune.models import chat_template, loading
from lmtune.data import sources
from lmtune.errors import cli
from lmtune.io import save_dataset, staged_outputs


@cli
def main() -> None:
    p = params.load()
    raw = sources.load_raw(p.data, p.seed)
    model, tokenizer = loading.load_base(p.model, p.seed)
    tokenizer = chat_template.with_default_template(tokenizer, p.model.chat_template)
    with staged_outputs(paths.RAW, paths.BASE) as (raw_dir, base_dir):
        save_dataset(raw, raw_dir)
        model.save_pretrained(base_dir)
        tokenizer.save_pretrained(base_dir)
    print(f"download: {', '.join(f'{k} {len(v)} rows' for k, v in raw.items())}; base model -> {paths.BASE}")


if __name__ == "__main__":
    main()
