"""Every path the pipeline reads or writes, in one place (dvc.yaml names the same ones)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params.yaml"

DATA = ROOT / "data"
RAW = DATA / "raw"          # download: DatasetDict, original schema, train + validation
FLAT = DATA / "flat"        # flatten: task columns (text | prompt+response | text(+pair)+label)
TOKENS = DATA / "tokens"    # tokenize: token ids per document
CHUNKS = DATA / "chunks"    # chunk: fixed-size training examples

MODELS = ROOT / "models"
BASE = MODELS / "base"              # download: save_pretrained of model + tokenizer
CHECKPOINTS = MODELS / "checkpoints"  # train: scratch for crash-resume (not a DVC output), removed after success
FINAL = MODELS / "final"            # train: tuned model + tokenizer
EXPORT = MODELS / "export"          # export: safetensors, tokenizer, card, samples
BASE_SAMPLES = MODELS / "base_samples.json"  # base_samples: the base model's samples, made once per base
# train: exists only while a run is in progress (step reached, memory in use); a run the OS killed leaves it,
# and the next run reports it. Not a DVC output, and outside models/checkpoints/ (lmtune.train.marker.RunMarker).
TRAIN_MARKER = MODELS / "train-in-progress.json"

METRICS = ROOT / "metrics"
TRAIN_METRICS = METRICS / "train.json"
TRAIN_TIMING = METRICS / "train_timing.json"  # wall-clock numbers, kept apart so train.json is reproducible
# Outputs whose bytes change with every run's clock: nothing that must reproduce byte for byte (the exported
# model card's provenance) may record them.
WALL_CLOCK = (TRAIN_TIMING,)
EVAL_BASE = METRICS / "eval_base.json"      # evaluate_base: {"base": ...} (cached apart from experiments)
BLOCKS_BASE = METRICS / "blocks_base.csv"   # evaluate_base: per validation block (paired comparisons)
EVAL_METRICS = METRICS / "eval.json"        # evaluate: base and tuned side by side
BLOCKS = METRICS / "blocks.csv"             # evaluate: per validation block, base and tuned columns
CONFUSION = METRICS / "confusion.csv"  # evaluate: tuned classifier's confusion matrix (DVC plot)
TRAIN_LIVE = METRICS / "train"      # dvclive curves (DVC plots)

REPORTS = ROOT / "reports"          # lmtune.cli.compare: table, self-contained HTML, PNG/SVG charts (git-ignored)
PLOTS_TEMPLATE = ROOT / ".dvc" / "offline_plots.html"  # dvc plots' page with vega inlined (.dvc/config, make install)
