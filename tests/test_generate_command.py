"""`minivlm generate --model DIR "prompt"`: the text it prints is the prompt and the decoded ids
of the library's generate, greedy or sampled with a seed; it stops at config.json's eos; and
every error is one line (exit 2 for bad arguments, 1 for failures)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import minivlm as mv
from minivlm.__main__ import main
from minivlm.models import LlamaConfig, LlamaForCausalLM
from minivlm.tokenizers import BPETokenizer
from make_vision_fixtures import randomize_minivlm

FIXTURES = Path(__file__).with_name("fixtures")
TOKENIZER = FIXTURES / "bpe_tokenizer" / "tokenizer.json"
PROMPT = "the red circle is"


def error_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith("minivlm generate: error: ") and err.count("\n") == 1, err
    return err[len("minivlm generate: error: "):]


@pytest.fixture(scope="module")
def decoder_dir(tmp_path_factory):
    """A random Llama with the fixture tokenizer's 420 ids, and that tokenizer.json."""
    directory = tmp_path_factory.mktemp("decoder")
    mv.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=420, hidden_size=16, intermediate_size=24,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, eos_token_id=None))
    mv.save_pretrained(randomize_minivlm(model, 0), directory)
    shutil.copy(TOKENIZER, directory / "tokenizer.json")
    return directory


def expected_text(directory, ids):
    """The prompt, then what the new ids spell."""
    tokenizer = BPETokenizer.load(directory / "tokenizer.json")
    prompt = tokenizer.encode(PROMPT)
    return PROMPT + tokenizer.decode(ids[0, len(prompt):].tolist()) + "\n"


def library_generate(directory, seed=0, **kwargs):
    tokenizer = BPETokenizer.load(directory / "tokenizer.json")
    model = mv.load_pretrained(directory)
    mv.manual_seed(seed)
    return model.generate(np.array([tokenizer.encode(PROMPT)]), **kwargs)


def test_prints_the_greedy_continuation(decoder_dir, capsys):
    assert main(["generate", "--model", str(decoder_dir), PROMPT, "--max-new-tokens", "9"]) == 0
    ids = library_generate(decoder_dir, max_new_tokens=9)
    assert capsys.readouterr().out == expected_text(decoder_dir, ids)


def test_sampling_is_reproducible_for_a_seed(decoder_dir, capsys):
    argv = ["generate", "--model", str(decoder_dir), PROMPT, "--max-new-tokens", "12",
            "--temperature", "1.3", "--top-k", "50", "--top-p", "0.95"]
    outputs = []
    for seed in ("4", "4", "5"):
        assert main(argv + ["--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    ids = library_generate(decoder_dir, seed=4, max_new_tokens=12, do_sample=True, temperature=1.3,
                           top_k=50, top_p=0.95)
    assert outputs[0] == outputs[1] == expected_text(decoder_dir, ids)
    assert outputs[2] != outputs[0]


def test_stops_at_the_eos_of_config_json(decoder_dir, tmp_path, capsys):
    directory = tmp_path / "with_eos"
    shutil.copytree(decoder_dir, directory)
    first, second = library_generate(decoder_dir, max_new_tokens=2)[0, -2:]
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "eos_token_id": int(second)}))
    assert main(["generate", "--model", str(directory), PROMPT]) == 0
    tokenizer = BPETokenizer.load(TOKENIZER)
    assert capsys.readouterr().out == PROMPT + tokenizer.decode([int(first)]) + "\n"


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "--temperature must be >= 0, got -1.0"),
    (["--top-p", "1.5", "--temperature", "1"], r"--top-p must be in (0, 1], got 1.5"),
    (["--top-k", "3"], "--top-k and --top-p shape sampling: give a --temperature above 0 too"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: invalid positive int value: '0'"),
])
def test_bad_arguments_exit_with_status_2(decoder_dir, flags, message, capsys):
    assert main(["generate", "--model", str(decoder_dir), PROMPT, *flags]) == 2
    assert message in error_line(capsys)


def test_errors_name_what_is_wrong(decoder_dir, tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "nowhere"), PROMPT]) == 1
    assert "nowhere is not a directory" in error_line(capsys)
    assert main(["generate", "--model", str(FIXTURES / "vit_tiny"), PROMPT]) == 2
    assert "holds a ViT, which does not generate text" in error_line(capsys)
    assert main(["generate", "--model", str(FIXTURES / "llama_tiny"), PROMPT]) == 1
    assert "llama_tiny holds no tokenizer.json" in error_line(capsys)
    assert main(["generate", "--model", str(decoder_dir), ""]) == 2
    assert "the prompt is empty" in error_line(capsys)

    wordpiece = tmp_path / "wordpiece"
    shutil.copytree(decoder_dir, wordpiece)
    config = json.loads(TOKENIZER.read_text(encoding="utf-8"))
    config["model"]["type"] = "WordPiece"
    (wordpiece / "tokenizer.json").write_text(json.dumps(config))
    assert main(["generate", "--model", str(wordpiece), PROMPT]) == 1
    assert "model type 'WordPiece' is not supported" in error_line(capsys)

    small = tmp_path / "small"
    shutil.copytree(FIXTURES / "llama_tiny", small)               # 61 token embeddings
    shutil.copy(TOKENIZER, small / "tokenizer.json")
    assert main(["generate", "--model", str(small), PROMPT]) == 1
    assert "past the model's 61 token embeddings" in error_line(capsys)
