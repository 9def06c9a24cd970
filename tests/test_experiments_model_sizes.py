"""nn.init.shapes_only (parameters with shapes and no memory) and `minivlm experiment model-sizes`:
the counts equal closed forms written here and transformers' / torch's models built on torch's
meta device; GPT-3 is built in a few MiB; the experiment writes its table, metrics and figure."""
import copy
import json

import numpy as np
import pytest

import minivlm as mv
from minivlm import nn
from minivlm.__main__ import main
from minivlm.models import CausalLM, LMConfig, MaskedLM
from minivlm.recipes.experiments import model_sizes


def gpt_closed_form(vocab, context, width, layers):
    """Token and position embeddings; per block two layer norms (4d), the attention's fused
    QKV and output projections (4d² + 4d) and the MLP d→4d→d (8d² + 5d); a final layer norm;
    the output layer tied to the token embedding."""
    return vocab * width + context * width + layers * (12 * width ** 2 + 13 * width) + 2 * width


def masked_lm_closed_form(vocab, context, width, layers):
    """As GPT's blocks, plus the embeddings' layer norm and the masked-LM head: a d×d dense
    layer, its layer norm and the decoder's bias (its weight tied to the token embedding)."""
    return (vocab * width + context * width + 2 * width
            + layers * (12 * width ** 2 + 13 * width) + width ** 2 + 3 * width + vocab)


def shapes_only_count(model_class, *config):
    with nn.init.shapes_only():
        return model_class(LMConfig(*config)).num_parameters()


def test_gpt2_small_count_is_the_closed_form_and_transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ours = shapes_only_count(CausalLM, "causal", 50257, 1024, 768, 12, 12)
    with torch.device("meta"):
        theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    count = sum(p.numel() for p in theirs.parameters())    # the tied lm_head counted once
    assert ours == gpt_closed_form(50257, 1024, 768, 12) == count == 124_439_808


def test_bert_base_count_is_the_closed_form_and_transformers_but_segments():
    """minivlm's MaskedLM is BertForMaskedLM without the 2 segment (token type) embeddings."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ours = shapes_only_count(MaskedLM, "mlm", 30522, 512, 768, 12, 12)
    with torch.device("meta"):
        theirs = transformers.BertForMaskedLM(transformers.BertConfig())
    count = sum(p.numel() for p in theirs.parameters())
    assert ours == masked_lm_closed_form(30522, 512, 768, 12) == count - 2 * 768


def test_roberta_and_gpt2_xl_rows_are_transformers_models():
    """The table's RoBERTa (but its one segment embedding) and GPT-2 rows."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    rows = {row.name: model_sizes.count_parameters(row.build)[0] for row in model_sizes.ROWS}
    with torch.device("meta"):
        roberta = transformers.RobertaForMaskedLM(transformers.RobertaConfig(
            vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, hidden_size=1024,
            num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096))
        gpt2_xl = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=1600, n_layer=48,
                                                                       n_head=25))
    assert rows["RoBERTa"] == sum(p.numel() for p in roberta.parameters()) - 1024
    assert rows["GPT-2"] == sum(p.numel() for p in gpt2_xl.parameters()) == 1_557_611_200


def test_transformer_base_count_is_torchs_transformer_and_one_embedding():
    torch = pytest.importorskip("torch")
    ours, = [model_sizes.count_parameters(row.build)[0] for row in model_sizes.ROWS
             if row.name == "Transformer-Base"]
    with torch.device("meta"):
        theirs = torch.nn.Transformer(512, 8, 6, 6, 2048)
    assert ours == sum(p.numel() for p in theirs.parameters()) + 37000 * 512


def test_gpt3_is_counted_in_a_few_mebibytes():
    count, peak_bytes = model_sizes.count_parameters(model_sizes.gpt(50257, 2048, 12288, 96, 96))
    assert count == gpt_closed_form(50257, 2048, 12288, 96) == 174_604_259_328
    assert peak_bytes < 8 * 2 ** 20


def test_shapes_only_parameters_hold_no_memory_and_the_block_ends():
    with nn.init.shapes_only():
        model = nn.Linear(1000, 2000)
    assert model.weight.shape == (2000, 1000) and model.weight.dtype == np.float32
    assert not any(model.weight.array.strides) and not model.weight.array.flags.writeable
    mv.manual_seed(0)
    after = nn.Linear(1000, 2000)      # built normally again: its own memory, drawn values
    assert all(after.weight.array.strides) and after.weight.array.flags.writeable
    assert np.abs(after.weight.array).max() > 0


def test_deepcopy_shares_only_shape_only_arrays():
    with nn.init.shapes_only():
        empty = nn.Linear(3, 4)
    full = nn.Linear(3, 4)
    empty_copy, full_copy = copy.deepcopy(empty), copy.deepcopy(full)
    assert empty_copy.weight.array is empty.weight.array
    assert not np.shares_memory(full_copy.weight.array, full.weight.array)
    assert type(full_copy.weight) is type(full.weight) and full_copy.weight.requires_grad
    np.testing.assert_array_equal(full_copy.weight.array, full.weight.array)


def test_experiment_model_sizes_writes_its_table(tmp_path, capsys):
    out = tmp_path / "sizes"
    assert main(["experiment", "model-sizes", "--out", str(out)]) in (0, None)
    results = json.loads((out / "results.json").read_text())
    rows = {r["model"]: r for r in results["models"]}
    assert list(rows) == [row.name for row in model_sizes.ROWS]
    assert rows["GPT-3"]["counted"] == gpt_closed_form(50257, 2048, 12288, 96)
    assert rows["BERT-Base"]["counted"] == masked_lm_closed_form(30522, 512, 768, 12)
    for r in results["models"]:
        assert r["relative_difference"] == pytest.approx(r["counted"] / r["slide"] - 1)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["model"] for m in metrics] == list(rows)
    assert (out / "model_sizes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "174,604,259,328" in printed and results["conclusion"] in printed
