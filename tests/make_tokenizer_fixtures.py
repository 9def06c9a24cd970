"""Write tests/fixtures/clip_tokenizer.json: what OpenAI's own CLIP tokenizer code outputs.

The oracle is open_clip's tokenizer.py, a copy of OpenAI's simple_tokenizer.py whose
`tokenize` is `clip.tokenize(..., truncate=True)`. Only that one file is imported, straight
from the wheel (extracted to a temporary directory), so open_clip's other dependencies
(torchvision, ...) are not needed; it does import torch.

open_clip renamed the special tokens to <start_of_text>/<end_of_text>, so for texts that
spell out a special token, OpenAI's <|startoftext|>/<|endoftext|> or open_clip's, the oracle
is instead transformers' CLIPTokenizer built from the same vocabulary and merges (it agrees
with OpenAI on such plain ASCII texts; checked below on every plain text of the corpus).

    pip download open_clip_torch==3.3.0 --no-deps -d /tmp/oc
    python tests/make_tokenizer_fixtures.py --wheel /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl

Needs torch, transformers, ftfy and regex. The fixture records their versions.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import tempfile
import zipfile
from pathlib import Path

import regex

FIXTURE = Path(__file__).with_name("fixtures") / "clip_tokenizer.json"
ORACLE_FILES = ("open_clip/tokenizer.py", "open_clip/bpe_simple_vocab_16e6.txt.gz")
SPECIAL_SPELLINGS = ("<|startoftext|>", "<|endoftext|>", "<start_of_text>", "<end_of_text>")

LONG_TEXT = ("a long caption that goes on and on about a small brown dog who runs across a wide "
             "green field under a bright blue sky, chasing a red ball thrown by a child in a "
             "yellow coat, while three white clouds drift slowly over the distant hills and a "
             "flock of noisy geese flies south for the winter, honking loudly as they pass")

TEXTS = [
    # plain
    "a photo of a cat.", "A Photo Of A CAT", "a diagram", "", "hello world",
    "iPhone McDonald's NASA's eBay", "the quick brown fox jumps over the lazy dog",
    # contractions
    "it's", "don't", "we're", "they've", "I'm", "you'll", "he'd", "IT'S DON'T WE'RE",
    "the dog's ball", "rock 'n' roll", "don’t", "“quoted” ‘single’",
    # accents, other scripts, emoji
    "café crème brûlée", "naïve façade", "Ångström", "São Paulo", "Zürich Straße",
    "İstanbul", "ΣΊΣΥΦΟΣ ΟΔΟΣ", "Привет, мир", "東京タワーの写真", "中文字符测试", "한국어 텍스트",
    "مرحبا بالعالم", "नमस्ते दुनिया", "I ❤️ pizza 🍕🍕", "👍🏽 thumbs up", "family: 👨‍👩‍👧",
    # HTML entities (unescaped twice) and text ftfy repairs
    "Tom &amp; Jerry", "it&#39;s", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp; double", "&amp;lt;tag",
    "&nbsp;x", "&copy; 2021", "&#x1F600; smile", "AT&T", "fish &chips", "sÃ©ance",
    "The Mona Lisa doesnÃƒÂ¢Ã¢â€šÂ¬Ã¢â€žÂ¢t have eyebrows.",
    "ＡＢＣ　ｄｅｆ", "ﬁne ﬂower",
    # numbers
    "12345", "3.14159", "1,000,000", "½ cup", "x² + y³", "٣ arabic-indic", "Ⅻ roman", "2024-01-31",
    # whitespace and control characters
    "  leading and trailing  ", "tab\tseparated\tvalues", "new\nline\n\nparagraph",
    "non\u00a0breaking\u00a0space", "em\u2003space", "zero\u200bwidth", "windows\r\nline",
    "   ", "\t\n", "bell\x07char", "sep\x1crator", "soft\u00adhyphen",
    # long words, punctuation runs
    "pneumonoultramicroscopicsilicovolcanoconiosis", "supercalifragilisticexpialidocious",
    "ab" * 60, "what?!?!", "...", "--->", "!!!???***", "(a) [b] {c}", "foo@bar.com",
    "https://example.com/path?q=1&r=2", "#hashtag @mention", "C++ & C#", "snake_case_name",
    LONG_TEXT, LONG_TEXT.upper() + " !!!",
    # special tokens spelled out (transformers oracle)
    "a <|startoftext|> b", "<|endoftext|>", "x<|endoftext|>y", "<start_of_text> hi",
]

TOKENIZE_BATCHES = [  # (texts, context_length); the oracle truncates like truncate=True
    (["a photo of a cat.", "", "Tom &amp; Jerry", LONG_TEXT, "東京タワーの写真"], 77),
    ([text for text in TEXTS if not any(s in text for s in SPECIAL_SPELLINGS)], 8),
]


def load_reference_tokenizer(wheel=None):
    """open_clip's tokenizer.py as a module (OpenAI's SimpleTokenizer inside), or None.

    Taken from `wheel` (an open_clip_torch wheel file) if given, else from an installed
    open_clip package; only that one file is imported. Importing it needs torch.
    """
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is not None:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(tmp, members=ORACLE_FILES)
            source = Path(tmp, "open_clip")
        else:
            spec = importlib.util.find_spec("open_clip")
            if spec is None:
                return None
            source = Path(spec.submodule_search_locations[0])
        spec = importlib.util.spec_from_file_location("open_clip_reference_tokenizer",
                                                      source / "tokenizer.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)      # reads the merges file while it still exists
    return module


def transformers_tokenizer(reference):
    """transformers' CLIPTokenizer with the reference's vocabulary and merges, OpenAI's names."""
    from transformers import CLIPTokenizer
    renamed = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    tokenizer = reference._tokenizer
    vocab = {renamed.get(token, token): i for token, i in tokenizer.encoder.items()}
    return CLIPTokenizer(vocab=vocab, merges=sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get))


def is_plain(text):
    """ASCII without HTML entities or control characters: ftfy and html.unescape change nothing."""
    return text.isascii() and "&" not in text and all(c.isprintable() or c in " \t\n\r" for c in text)


def encode_entries(reference, hf):
    """One {"text", "ids", "decoded", "oracle"} per text ("decoded" only from OpenAI's code)."""
    entries = []
    for text in TEXTS:
        # open_clip collapses whitespace with str.split, OpenAI with regex's \s+: same here
        cleaned = reference.basic_clean(text)
        assert " ".join(cleaned.split()) == regex.sub(r"\s+", " ", cleaned).strip(), text
        if any(s in text for s in SPECIAL_SPELLINGS):
            assert is_plain(text), text
            entries.append({"text": text, "ids": hf(text, add_special_tokens=False)["input_ids"],
                            "oracle": "transformers.CLIPTokenizer"})
            continue
        ids = reference._tokenizer.encode(text)
        if is_plain(text):
            assert hf(text, add_special_tokens=False)["input_ids"] == ids, text
        entries.append({"text": text, "ids": ids, "decoded": reference._tokenizer.decode(ids),
                        "oracle": "open_clip SimpleTokenizer"})
    return entries


def to_json(fixture):
    """The fixture as JSON with one text (or one tokenize batch) per line."""
    fields = []
    for key, value in fixture.items():
        if isinstance(value, list):
            value = "[\n  " + ",\n  ".join(json.dumps(item) for item in value) + "\n ]"
        else:
            value = json.dumps(value)
        fields.append(f"{json.dumps(key)}: {value}")
    return "{\n " + ",\n ".join(fields) + "\n}\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", help="open_clip_torch wheel (default: the installed open_clip)")
    args = parser.parse_args()
    reference = load_reference_tokenizer(args.wheel)
    if reference is None:
        raise SystemExit("open_clip is not installed; pass --wheel path/to/open_clip_torch-*.whl")
    hf = transformers_tokenizer(reference)
    versions = {name: importlib.metadata.version(name) for name in ("transformers", "ftfy", "regex")}
    versions["open_clip"] = Path(args.wheel).name if args.wheel else importlib.metadata.version("open_clip_torch")
    fixture = {
        "made_by": "tests/make_tokenizer_fixtures.py",
        "versions": versions,
        "encode": encode_entries(reference, hf),
        "tokenize": [{"texts": texts, "context_length": length,
                      "ids": reference.tokenize(texts, context_length=length).tolist()}
                     for texts, length in TOKENIZE_BATCHES],
    }
    FIXTURE.parent.mkdir(exist_ok=True)
    temporary = FIXTURE.with_name(FIXTURE.name + ".tmp")
    temporary.write_text(to_json(fixture))
    os.replace(temporary, FIXTURE)
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes, {len(TEXTS)} texts)")


if __name__ == "__main__":
    main()
