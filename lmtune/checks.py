"""Input checks that turn bad files into one-line errors naming the key, file, line or column at fault.

Run before handing a file to `datasets` or `transformers`, whose own errors are multi-line, name no
line, or (for a broken JSON line) only say that "an error occurred while generating the dataset".
"""
import json
from pathlib import Path

from lmtune.errors import UserError


def one_line(e: BaseException, limit: int = 300) -> str:
    """An exception as a single short line (library messages often span many)."""
    text = " ".join(str(e).split()) or e.__class__.__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_data_file(path: Path, key: str) -> None:
    """A local data file must be UTF-8 text with content; JSON lines must each parse (errors name the line)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(path).metadata.num_rows
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise UserError(f"{key}: {path} is not a readable parquet file: {one_line(e)}") from None
        if rows == 0:
            raise UserError(f"{key}: data file has no rows: {path}")
        return
    whole_json = False
    if suffix == ".json":
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip()
        whole_json = head.startswith(b"[")  # one JSON document; otherwise JSON lines
    content = False
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{key}: {path} line {n} is not UTF-8 text (byte {raw[e.start:e.start + 1]!r} at column {e.start + 1})") from None
            if not line.strip():
                continue
            content = True
            if suffix in (".jsonl", ".json") and not whole_json:
                try:
                    json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{key}: {path} line {n} is not valid JSON: {e.msg} (column {e.colno})") from None
    if not content:
        raise UserError(f"{key}: data file is empty: {path}")
    if whole_json:
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{key}: {path} line {e.lineno} is not valid JSON: {e.msg} (column {e.colno})") from None


def check_safetensors(folder: Path) -> None:
    """Every *.safetensors file in a model folder must have a readable header that fits the file."""
    from safetensors import safe_open

    for f in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as sf:
                sf.keys()
        except Exception as e:  # SafetensorError, OSError, ...
            raise UserError(f"{f}: not a valid safetensors file ({one_line(e)})") from None
