"""GPT-2's exact byte-level BPE, rebuilt offline from the ranks openai-whisper ships.

`whisper/assets/gpt2.tiktoken` holds GPT-2's 50256 BPE ranks as `base64(token_bytes) rank` lines.
We convert them to HF `vocab.json` + `merges.txt` and save a normal HF tokenizer folder.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import pathlib
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers is heavy; only build_gpt2_tokenizer needs it at run time.
    import transformers

GPT2_TIKTOKEN_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOS = "<|endoftext|>"
EOS_ID = 50256


def _locate() -> pathlib.Path:
    """Path of whisper/assets/gpt2.tiktoken, without importing whisper."""
    # find_spec on a top-level name only resolves the package directory; it never runs
    # whisper/__init__.py (which would pull in torch, numba, ...). openai-whisper is installed --no-deps.
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("openai-whisper is not installed: pip install --no-deps -r requirements-assets.txt")
    return pathlib.Path(next(iter(spec.submodule_search_locations))) / "assets" / "gpt2.tiktoken"


def tiktoken_path() -> pathlib.Path:
    """Locate GPT-2's rank file and check its sha256."""
    path = _locate()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != GPT2_TIKTOKEN_SHA256:
        raise ValueError(f"{path}: sha256 {digest} != expected {GPT2_TIKTOKEN_SHA256}")
    return path


def load_ranks(path: str | pathlib.Path) -> dict[bytes, int]:
    """Parse `base64(token_bytes) rank` lines."""
    ranks: dict[bytes, int] = {}
    for line in pathlib.Path(path).read_text(encoding="ascii").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode char map (as in openai/gpt-2 encoder.py)."""
    # Printable Latin-1 bytes map to themselves; the rest are shifted past 255 so that
    # no byte maps to whitespace/control chars, which BPE vocab files cannot hold.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _split(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """The final merge BPE makes for `token`: run BPE on its bytes with lower ranks only."""
    # tiktoken merges the adjacent pair whose concatenation has the lowest rank. Restricting to
    # ranks below the token's own stops exactly one merge short, leaving the two parts it was made from.
    limit = ranks[token]
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, best_i = limit, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1], limit)
            if r < best:
                best, best_i = r, i
        if best_i < 0:
            break
        parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {limit}) is not a merge of two lower-rank tokens")
    return parts[0], parts[1]


def ranks_to_vocab_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """HF vocab (+ <|endoftext|>) and merges, in rank order, from tiktoken ranks."""
    b2u = bytes_to_unicode()

    def text(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {text(tok): rank for tok, rank in ranks.items()}
    vocab[EOS] = EOS_ID
    # HF BPE applies merges by line order, so rank order here reproduces tiktoken's priorities.
    merges = [tuple(map(text, _split(tok, ranks))) for tok in sorted(ranks, key=ranks.__getitem__) if len(tok) > 1]
    return vocab, merges  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def _converted() -> tuple[str, str]:
    """vocab.json and merges.txt contents, computed once per process."""
    vocab, merges = ranks_to_vocab_merges(load_ranks(tiktoken_path()))
    merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    return json.dumps(vocab, ensure_ascii=False), merges_txt


def build_gpt2_tokenizer(out_dir: str | pathlib.Path) -> transformers.PreTrainedTokenizerFast:
    """Write GPT-2's tokenizer into out_dir (an HF tokenizer folder) and return it."""
    import transformers

    vocab_json, merges_txt = _converted()
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp)
        (src / "vocab.json").write_text(vocab_json, encoding="utf-8")
        (src / "merges.txt").write_text(merges_txt, encoding="utf-8")
        config = {"model_max_length": 1024, "bos_token": EOS, "eos_token": EOS, "unk_token": EOS, "add_prefix_space": False}
        (src / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        # from_pretrained on a folder, not GPT2TokenizerFast(vocab_file=...): in transformers 5
        # the constructor ignores file kwargs and silently builds an empty tokenizer.
        tok = transformers.GPT2TokenizerFast.from_pretrained(src)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    return tok
