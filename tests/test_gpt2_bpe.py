"""The offline GPT-2 BPE conversion must match GPT-2 (via tiktoken on the same ranks) exactly."""

import subprocess
import sys

import pytest
import tiktoken
import tiktoken.load

from lmtune.models import gpt2_bpe

GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

SAMPLE = """The State of the Union is strong.  Mr. Speaker, Mr. Vice President, members of Congress...
In 1790, George Washington addressed 26 senators & 65 representatives; that's 91 people (0.0091%).
Tab\tseparated\tvalues\t\t\tand   runs    of     spaces      here.
Trailing spaces   \n\n\n   Leading spaces, then blank lines above.\r\nWindows line ending.

Ünïcödé: café, naïve, Zürich, Ærøskøbing, ﬁnancial, Ω≈ç√∫, ½ ¾ ², 𝔘𝔫𝔦𝔠𝔬𝔡𝔢.
Ελληνικά κείμενο, Русский текст, 中文文本測試, 日本語のテキスト, 한국어 텍스트, العربية, עברית, हिन्दी.
Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇺🇸 ❤️ 🤖🦀🐍 — and a zero-width joiner\u200d here, NBSP\u00a0there.
Numbers: 3.14159 2,718,281 -42 +7e-10 0x1F 1_000_000 12345678901234567890 ４２.
Contractions: I'm, you're, we've, they'll, he'd, it's, don't, CAN'T, O'Neill's 'quoted'.

def tokenize(text: str) -> list[int]:
    \"\"\"Docstring with `backticks` and {braces}.\"\"\"
    if not text:  # comment
        return []
    return [ord(c) ** 2 for c in text if c.isalnum()]  # ~!@#$%^&*()_+=-[]|\\;:<>,./?

{"json": [1, 2.5, null, true], "nested": {"k": "v\\n"}}
<html><body class="x">&amp; &lt;tag&gt;</body></html>
SELECT * FROM speeches WHERE year >= 1900 ORDER BY year DESC;
""" * 3  # a few KB, so merges deep in the rank list get exercised


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return gpt2_bpe.build_gpt2_tokenizer(tmp_path_factory.mktemp("gpt2_tokenizer"))


@pytest.fixture(scope="session")
def reference():
    ranks = tiktoken.load.load_tiktoken_bpe(str(gpt2_bpe.tiktoken_path()))
    return tiktoken.Encoding(name="gpt2_local", pat_str=GPT2_PAT, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})


def test_hello_world(tokenizer):
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]


def test_special_tokens_and_size(tokenizer):
    assert tokenizer.eos_token_id == 50256
    assert tokenizer.bos_token == tokenizer.unk_token == "<|endoftext|>"
    assert len(tokenizer) == 50257
    assert tokenizer.model_max_length == 1024


def test_saved_folder_reloads(tokenizer, tmp_path):
    import transformers

    gpt2_bpe.build_gpt2_tokenizer(tmp_path)  # existing dir is fine; conversion is cached
    reloaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded("Hello world")["input_ids"] == [15496, 995]
    assert reloaded.eos_token_id == 50256 and len(reloaded) == 50257


def test_matches_tiktoken(tokenizer, reference):
    assert len(SAMPLE.encode("utf-8")) > 3000
    for text in [SAMPLE, *SAMPLE.splitlines(keepends=True)]:
        ids = tokenizer(text)["input_ids"]
        assert ids == reference.encode_ordinary(text), text
        assert tokenizer.decode(ids) == text


def test_eos_in_text_is_special(tokenizer, reference):
    text = "end of speech.<|endoftext|>Next speech"
    ids = tokenizer(text)["input_ids"]
    assert ids == reference.encode(text, allowed_special="all")
    assert 50256 in ids


def test_vocab_merges_shape():
    vocab, merges = gpt2_bpe.ranks_to_vocab_merges(gpt2_bpe.load_ranks(gpt2_bpe.tiktoken_path()))
    assert len(vocab) == 50257 and len(merges) == 50000
    assert merges[0] == ("Ġ", "t")  # GPT-2's first merge
    assert all(a + b in vocab for a, b in merges)
    assert sorted(vocab.values()) == list(range(50257))


def test_tampered_file_rejected(tmp_path, monkeypatch):
    bad = tmp_path / "gpt2.tiktoken"
    data = bytearray(gpt2_bpe.tiktoken_path().read_bytes())
    data[-2] ^= 1  # flip one bit of the last rank
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(gpt2_bpe, "_locate", lambda: bad)
    with pytest.raises(ValueError, match=gpt2_bpe.GPT2_TIKTOKEN_SHA256) as err:
        gpt2_bpe.tiktoken_path()
    assert str(bad) in str(err.value)


def test_locating_does_not_import_whisper():
    # Fresh interpreter: this process may already have other modules loaded.
    code = "import sys; from lmtune.models import gpt2_bpe; gpt2_bpe.tiktoken_path(); assert 'whisper' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
