"""download: the dataset (original schema, train + validation) and the base model, saved locally."""
from lmtune import params, paths
from lmtune.models import chat_template, loading
from lmtune.data import sources
from lmtune.errors import cli
from lmtune.io import atomic_dir, save_dataset


@cli
def main() -> None:
    p = params.load()
    raw = sources.load_raw(p.data, p.seed)
    model, tokenizer = loading.load_base(p.model, p.seed)
    tokenizer = chat_template.with_default_template(tokenizer, p.model.chat_template)
    with atomic_dir(paths.RAW) as tmp:
        save_dataset(raw, tmp)
    with atomic_dir(paths.BASE) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    print(f"download: {', '.join(f'{k} {len(v)} rows' for k, v in raw.items())}; base model -> {paths.BASE}")


if __name__ == "__main__":
    main()
