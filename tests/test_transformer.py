"""Transformer layers and positional encodings: against torch.nn (TransformerEncoderLayer,
TransformerDecoderLayer, Transformer) and reference/transformer.py (tier 3), finite-difference
gradients (tier 1), float32 on every backend against float64 NumPy (tier 2)."""
import copy
import math

import numpy as np
import pytest
from hypothesis import example, given, strategies as st

import minivlm as mv
from minivlm import nn
from minivlm.nn.positional import (LearnedPositionalEmbedding, SinusoidalPositionalEncoding,
                                   sinusoidal_table)
from minivlm.nn.transformer import (CoAttentionBlock, Transformer, TransformerBlock,
                                    TransformerDecoder, TransformerDecoderLayer,
                                    TransformerEncoder, TransformerEncoderLayer)
from minivlm.testing import assert_close, gradcheck
from reference import transformer as ref

D_MODEL, NHEAD, FF = 6, 2, 10
pytestmark = pytest.mark.filterwarnings("ignore:Support for mismatched",
                                        "ignore:enable_nested_tensor is True")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _randomize(module, seed=0, std=0.5):
    """Random values in every parameter (biases and norms too, so a swapped term shows)."""
    rng = _rng(seed)
    for p in module.parameters():
        p.array[...] = std * rng.standard_normal(p.shape)
    return module


def _torch_twin(ours, torch_type, **kwargs):
    """torch's layer with ours' arguments, given ours' (random) weights through its state dict."""
    torch = pytest.importorskip("torch")
    theirs = torch_type(**kwargs, dtype=torch.float64)
    theirs.load_state_dict({name: torch.from_numpy(t.numpy()) for name, t in
                            ours.state_dict().items()})
    return theirs


def _compare_with_torch(ours, theirs, our_args, their_args, rtol=1e-6, **masks):
    """Forward and backward of both on the same float64 inputs; compare the outputs, the input
    gradients and every parameter's gradient, relative ‖a−b‖/‖b‖ <= rtol (plus an absolute 1e-12
    for a gradient that is zero up to rounding, as a post-norm layer's can be)."""
    torch = pytest.importorskip("torch")
    our_inputs = [mv.tensor(a, requires_grad=True) for a in our_args]
    their_inputs = [torch.tensor(a, requires_grad=True) for a in our_args]
    our_y = ours(*our_inputs, **masks)
    their_y = theirs(*their_inputs, **their_args)
    assert_close(our_y, their_y.detach().numpy(), rtol=rtol, atol=1e-12)
    grad = _rng(1).standard_normal(our_y.shape)
    our_y.backward(grad)
    their_y.backward(torch.from_numpy(grad))
    for ours_x, theirs_x in zip(our_inputs, their_inputs):
        assert_close(ours_x.grad, theirs_x.grad.numpy(), rtol=rtol, atol=1e-12)
    their_grads = {name: p.grad for name, p in theirs.named_parameters()}
    assert sorted(their_grads) == sorted(name for name, _ in ours.named_parameters())
    for name, p in ours.named_parameters():
        try:
            assert_close(p.grad, their_grads[name].numpy(), rtol=rtol, atol=1e-12)
        except AssertionError as e:
            raise AssertionError(f"the gradient of {name}: {e}") from None


def _torch_masks(masks):
    torch = pytest.importorskip("torch")
    return {name: None if m is None else torch.from_numpy(np.asarray(m))
            for name, m in masks.items()}


def _layout(batch_first, N, L, d=D_MODEL, seed=0):
    shape = (N, L, d) if batch_first else (L, N, d)
    return _rng(seed).standard_normal(shape)


def _padding(N, L, seed=0):
    """A bool key padding mask (True = padding) that keeps position 0 of every row visible."""
    mask = _rng(seed).random((N, L)) < 0.4
    mask[:, 0] = False
    return mask


layer_options = dict(norm_first=st.booleans(), activation=st.sampled_from(["relu", "gelu"]),
                     batch_first=st.booleans(), bias=st.booleans(), seed=st.integers(0, 99))


# --- against torch.nn -----------------------------------------------------------------------------

@given(**layer_options, masked=st.booleans())
@example(norm_first=False, activation="relu", batch_first=False, bias=True, seed=0, masked=True)
@example(norm_first=True, activation="gelu", batch_first=True, bias=True, seed=1, masked=True)
def test_encoder_layer_matches_torch(norm_first, activation, batch_first, bias, seed, masked):
    torch = pytest.importorskip("torch")
    args = dict(d_model=D_MODEL, nhead=NHEAD, dim_feedforward=FF, dropout=0.0,
                activation=activation, batch_first=batch_first, norm_first=norm_first, bias=bias)
    ours = _randomize(TransformerEncoderLayer(**args).double(), seed)
    theirs = _torch_twin(ours, torch.nn.TransformerEncoderLayer, **args)
    N, L = 2, 4
    masks = {}
    if masked:
        masks = dict(src_mask=Transformer.generate_square_subsequent_mask(L, "float64").numpy(),
                     src_key_padding_mask=_padding(N, L, seed))
    _compare_with_torch(ours, theirs, [_layout(batch_first, N, L, seed=seed)],
                        _torch_masks(masks), **masks)


def test_encoder_layer_is_causal_matches_torchs_causal_mask():
    torch = pytest.importorskip("torch")
    args = dict(d_model=D_MODEL, nhead=NHEAD, dim_feedforward=FF, dropout=0.0, batch_first=True)
    ours = _randomize(TransformerEncoderLayer(**args).double())
    theirs = _torch_twin(ours, torch.nn.TransformerEncoderLayer, **args)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(4, dtype=torch.float64)
    _compare_with_torch(ours, theirs, [_layout(True, 2, 4)], dict(src_mask=causal, is_causal=True),
                        is_causal=True)


@given(**layer_options, masked=st.booleans())
@example(norm_first=False, activation="relu", batch_first=False, bias=True, seed=0, masked=True)
@example(norm_first=True, activation="gelu", batch_first=True, bias=False, seed=1, masked=True)
def test_decoder_layer_matches_torch(norm_first, activation, batch_first, bias, seed, masked):
    torch = pytest.importorskip("torch")
    args = dict(d_model=D_MODEL, nhead=NHEAD, dim_feedforward=FF, dropout=0.0,
                activation=activation, batch_first=batch_first, norm_first=norm_first, bias=bias)
    ours = _randomize(TransformerDecoderLayer(**args).double(), seed)
    theirs = _torch_twin(ours, torch.nn.TransformerDecoderLayer, **args)
    N, T, S = 2, 4, 3
    masks = {}
    if masked:
        masks = dict(tgt_mask=Transformer.generate_square_subsequent_mask(T, "float64").numpy(),
                     tgt_key_padding_mask=_padding(N, T, seed),
                     memory_key_padding_mask=_padding(N, S, seed + 1))
    _compare_with_torch(ours, theirs, [_layout(batch_first, N, T, seed=seed),
                                       _layout(batch_first, N, S, seed=seed + 1)],
                        _torch_masks(masks), **masks)


@pytest.mark.parametrize("batch_first, norm_first", [(False, False), (True, True)])
def test_transformer_matches_torch(batch_first, norm_first):
    torch = pytest.importorskip("torch")
    args = dict(d_model=D_MODEL, nhead=NHEAD, num_encoder_layers=2, num_decoder_layers=2,
                dim_feedforward=FF, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
    ours = _randomize(Transformer(**args).double())
    theirs = _torch_twin(ours, torch.nn.Transformer, **args)
    N, S, T = 2, 3, 4
    masks = dict(tgt_mask=Transformer.generate_square_subsequent_mask(T, "float64").numpy(),
                 src_key_padding_mask=_padding(N, S), memory_key_padding_mask=_padding(N, S))
    sequences = [_layout(batch_first, N, S), _layout(batch_first, N, T, seed=1)]
    _compare_with_torch(ours, theirs, sequences, _torch_masks(masks), **masks)


def test_callable_activation_and_stacks_without_norm_match_torch():
    torch = pytest.importorskip("torch")
    args = dict(d_model=D_MODEL, nhead=NHEAD, dim_feedforward=FF, dropout=0.0, batch_first=True)
    ours = TransformerEncoder(TransformerEncoderLayer(**args, activation=nn.GELU("tanh")), 2)
    ours = _randomize(ours.double())
    theirs = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(
        **args, activation=torch.nn.GELU("tanh"), dtype=torch.float64), 2,
        enable_nested_tensor=False)
    theirs.load_state_dict({k: torch.from_numpy(t.numpy()) for k, t in ours.state_dict().items()})
    _compare_with_torch(ours, theirs, [_layout(True, 2, 3)], {})

    ours = _randomize(TransformerDecoder(TransformerDecoderLayer(**args), 2).double())
    theirs = torch.nn.TransformerDecoder(
        torch.nn.TransformerDecoderLayer(**args, dtype=torch.float64), 2)
    theirs.load_state_dict({k: torch.from_numpy(t.numpy()) for k, t in ours.state_dict().items()})
    _compare_with_torch(ours, theirs, [_layout(True, 2, 3), _layout(True, 2, 4, seed=1)], {})


def test_torch_state_dict_loads_as_is():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch.nn.Transformer(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                                  dim_feedforward=12, dropout=0.0, batch_first=True).double()
    ours = Transformer(d_model=8, nhead=2, num_encoder_layers=2, num_decoder_layers=1,
                       dim_feedforward=12, dropout=0.0, batch_first=True).double()
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.load_state_dict({name: t.numpy() for name, t in theirs.state_dict().items()})
    src, tgt = _rng().standard_normal((2, 3, 8)), _rng(1).standard_normal((2, 5, 8))
    expected = theirs(torch.from_numpy(src), torch.from_numpy(tgt)).detach().numpy()
    assert_close(ours(mv.tensor(src), mv.tensor(tgt)), expected, rtol=1e-10)


@pytest.mark.parametrize("size", [1, 2, 5])
def test_square_subsequent_mask_is_torchs(size):
    torch = pytest.importorskip("torch")
    expected = torch.nn.Transformer.generate_square_subsequent_mask(size).numpy()
    np.testing.assert_array_equal(Transformer.generate_square_subsequent_mask(size).numpy(),
                                  expected)


def test_transformer_init_is_xavier_for_every_matrix():
    model = Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                        dim_feedforward=200)
    bound = math.sqrt(6 / (200 + 8))  # Xavier for linear1 (200, 8); Linear's own: 1/√8, twice it
    largest = np.abs(model.decoder.layers[0].linear1.weight.numpy()).max()
    assert 0.9 * bound < largest <= bound
    assert not model.encoder.layers[0].self_attn.in_proj_bias.numpy().any()


# --- against the reference ------------------------------------------------------------------------

def _numpy_weights(module):
    return {name: t.numpy() for name, t in module.state_dict().items()}


@given(norm_first=st.booleans(), activation=st.sampled_from(["relu", "gelu"]),
       seed=st.integers(0, 99))
def test_layers_match_reference(norm_first, activation, seed):
    config = dict(nhead=NHEAD, activation=activation, norm_first=norm_first, layer_norm_eps=1e-5)
    args = dict(d_model=D_MODEL, nhead=NHEAD, dim_feedforward=FF, dropout=0.0,
                activation=activation, batch_first=True, norm_first=norm_first)
    x, memory = _layout(True, 2, 4, seed=seed), _layout(True, 2, 3, seed=seed + 1)
    mask = Transformer.generate_square_subsequent_mask(4, "float64").numpy()

    encoder = _randomize(TransformerEncoderLayer(**args).double(), seed)
    expected = ref.encoder_layer(x, _numpy_weights(encoder), config, src_mask=mask)
    assert_close(encoder(mv.tensor(x), src_mask=mask), expected, rtol=1e-10)

    decoder = _randomize(TransformerDecoderLayer(**args).double(), seed)
    expected = ref.decoder_layer(x, memory, _numpy_weights(decoder), config, tgt_mask=mask,
                                 memory_key_padding_mask=_padding(2, 3, seed))
    assert_close(decoder(mv.tensor(x), mv.tensor(memory), tgt_mask=mask,
                         memory_key_padding_mask=_padding(2, 3, seed)), expected, rtol=1e-10)


def test_transformer_matches_reference():
    config = dict(nhead=NHEAD, num_encoder_layers=2, num_decoder_layers=1)
    model = _randomize(Transformer(D_MODEL, NHEAD, 2, 1, FF, dropout=0.0,
                                   batch_first=True).double())
    src, tgt = _layout(True, 2, 3), _layout(True, 2, 4, seed=1)
    mask = Transformer.generate_square_subsequent_mask(4, "float64").numpy()
    expected = ref.transformer(src, tgt, _numpy_weights(model), config, tgt_mask=mask)
    assert_close(model(mv.tensor(src), mv.tensor(tgt), tgt_mask=mask), expected, rtol=1e-10)


@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_block_is_the_slides_block(norm_first):
    block = _randomize(TransformerBlock(D_MODEL, NHEAD, norm_first=norm_first).double())
    assert block.linear1.out_features == 4 * D_MODEL and block.self_attn.batch_first
    x = _layout(True, 2, 5)
    config = dict(nhead=NHEAD, activation="gelu", norm_first=norm_first)
    assert_close(block(mv.tensor(x)), ref.encoder_layer(x, _numpy_weights(block), config),
                 rtol=1e-10)


# --- positional encodings -------------------------------------------------------------------------

@given(num_positions=st.integers(1, 50), dim=st.integers(1, 17))
def test_sinusoidal_table_matches_reference(num_positions, dim):
    table = sinusoidal_table(num_positions, dim, dtype="float64")
    assert_close(table, ref.sinusoidal_positional_encoding(num_positions, dim), rtol=1e-12)


def test_sinusoidal_table_by_hand():
    table = sinusoidal_table(3, 4, dtype="float64").numpy()
    np.testing.assert_allclose(table[0], [0, 1, 0, 1])
    np.testing.assert_allclose(table[2], [math.sin(2), math.cos(2), math.sin(2 / 100),
                                          math.cos(2 / 100)], rtol=1e-12)


def test_sinusoidal_encoding_is_added_and_learns_nothing():
    layer = SinusoidalPositionalEncoding(d_model=6)
    x = _rng().standard_normal((2, 4, 6))
    assert_close(layer(mv.tensor(x)).numpy() - x, np.broadcast_to(
        ref.sinusoidal_positional_encoding(4, 6), (2, 4, 6)), rtol=1e-12)
    assert layer(mv.tensor(x, dtype="float32")).dtype == "float32"
    assert list(layer.state_dict()) == [] and list(layer.parameters()) == []
    with pytest.raises(ValueError, match=r"\(\.\.\., L, 6\), got shape \(11, 5\)"):
        layer(mv.randn(11, 5))


def test_learned_positional_embedding():
    layer = _randomize(LearnedPositionalEmbedding(num_positions=5, embedding_dim=3).double())
    with pytest.raises(ValueError, match=r"\(\.\.\., L, 3\) with L <= 5, got shape \(6, 3\)"):
        layer(mv.randn(6, 3))
    x = mv.tensor(_rng().standard_normal((2, 4, 3)), requires_grad=True)
    assert_close(layer(x).numpy() - x.numpy(), np.broadcast_to(layer.weight.numpy()[:4], (2, 4, 3)),
                 rtol=1e-12)
    gradcheck(lambda x, weight: layer(x), {"x": x, "weight": layer.weight})
    assert not layer.weight.grad.numpy()[4:].any()  # the unused position gets no gradient
    assert 0.005 < LearnedPositionalEmbedding(100, 50).weight.numpy().std() < 0.04  # N(0, 0.02²)


# --- ViLBERT co-attention -------------------------------------------------------------------------

def _torch_cross_attention_block(ours, torch):
    """CrossAttentionBlock built from torch modules with ours' weights: attention of x to the
    context, residual + LN, MLP (fc1, GELU, fc2), residual + LN."""
    attn = torch.nn.MultiheadAttention(ours.attn.embed_dim, ours.attn.num_heads,
                                       kdim=ours.attn.kdim, vdim=ours.attn.vdim,
                                       batch_first=True, dtype=torch.float64)
    norm1, norm2 = (torch.nn.LayerNorm(ours.attn.embed_dim, eps=1e-12, dtype=torch.float64)
                    for _ in range(2))
    fc1 = torch.nn.Linear(*reversed(ours.mlp.fc1.weight.shape), dtype=torch.float64)
    fc2 = torch.nn.Linear(*reversed(ours.mlp.fc2.weight.shape), dtype=torch.float64)
    modules = torch.nn.ModuleDict(dict(attn=attn, norm1=norm1, norm2=norm2, fc1=fc1, fc2=fc2))
    modules.load_state_dict({name.replace("mlp.", ""): torch.from_numpy(t.numpy())
                             for name, t in ours.state_dict().items()})

    def block(x, context, padding):
        x = norm1(x + attn(x, context, context, key_padding_mask=padding, need_weights=False)[0])
        return norm2(x + fc2(torch.nn.functional.gelu(fc1(x))))
    return block


def test_co_attention_block_matches_torch():
    torch = pytest.importorskip("torch")
    layer = _randomize(CoAttentionBlock(image_dim=6, text_dim=4, nhead=2, dim_feedforward=8,
                                        dropout=0.0).double())
    image, text = _rng().standard_normal((2, 3, 6)), _rng(1).standard_normal((2, 5, 4))
    image_padding, text_padding = _padding(2, 3), _padding(2, 5, seed=1)
    image_out, text_out = layer(mv.tensor(image), mv.tensor(text), image_padding, text_padding)
    image_block = _torch_cross_attention_block(layer.image, torch)
    text_block = _torch_cross_attention_block(layer.text, torch)
    t_image, t_text = torch.from_numpy(image), torch.from_numpy(text)
    expected_image = image_block(t_image, t_text, torch.from_numpy(text_padding))
    expected_text = text_block(t_text, t_image, torch.from_numpy(image_padding))
    assert_close(image_out, expected_image.detach().numpy(), rtol=1e-10)
    assert_close(text_out, expected_text.detach().numpy(), rtol=1e-10)


def test_co_attention_streams_see_only_each_other_through_attention():
    """A word's output depends on that word and the image regions only (the text stream has no
    self-attention here); words padded out change nothing in the image stream."""
    layer = CoAttentionBlock(image_dim=4, text_dim=4, nhead=2, dropout=0.0).double()
    image, text = _rng().standard_normal((1, 3, 4)), _rng(1).standard_normal((1, 5, 4))
    padding = np.array([[False, False, True, True, True]])
    changed = text.copy()
    changed[:, 2:] += 10
    first = layer(mv.tensor(image), mv.tensor(text), text_padding_mask=padding)
    second = layer(mv.tensor(image), mv.tensor(changed), text_padding_mask=padding)
    assert_close(first[0], second[0], rtol=1e-12)
    assert_close(first[1].numpy()[:, :2], second[1].numpy()[:, :2], rtol=1e-12)
    assert np.abs(first[1].numpy()[:, 2:] - second[1].numpy()[:, 2:]).min() > 1e-3


# --- gradients ------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_and_decoder_layer_gradients(norm_first):
    args = dict(d_model=4, nhead=2, dim_feedforward=5, dropout=0.0, batch_first=True,
                activation="gelu", norm_first=norm_first)
    encoder = _randomize(TransformerEncoderLayer(**args).double())
    x = mv.tensor(_rng().standard_normal((2, 3, 4)), requires_grad=True)
    gradcheck(lambda x, **weights: encoder(x, is_causal=True),
              {"x": x, **dict(encoder.named_parameters())})
    decoder = _randomize(TransformerDecoderLayer(**args).double())
    memory = mv.tensor(_rng(1).standard_normal((2, 2, 4)), requires_grad=True)
    gradcheck(lambda x, memory, **weights: decoder(x, memory, tgt_is_causal=True),
              {"x": x, "memory": memory, **dict(decoder.named_parameters())})


def test_co_attention_gradients():
    layer = _randomize(CoAttentionBlock(image_dim=4, text_dim=2, nhead=2, dim_feedforward=3,
                                        dropout=0.0).double())
    image = mv.tensor(_rng().standard_normal((1, 3, 4)), requires_grad=True)
    text = mv.tensor(_rng(1).standard_normal((1, 2, 2)), requires_grad=True)

    def both_streams(image, text, **weights):
        image_out, text_out = layer(image, text)
        return mv.functional.cat([image_out.reshape(-1), text_out.reshape(-1)])
    gradcheck(both_streams, {"image": image, "text": text, **dict(layer.named_parameters())})


# --- behaviour ------------------------------------------------------------------------------------

def test_dropout_acts_in_training_only():
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.3, batch_first=True).double()
    plain = copy.deepcopy(layer)
    for module in plain.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    plain.self_attn.dropout = 0.0
    x = mv.tensor(_rng().standard_normal((2, 3, 8)))
    assert_close(layer.eval()(x), plain(x), rtol=1e-12)
    assert np.abs(layer.train()(x).numpy() - plain(x).numpy()).max() > 1e-3


def test_transformer_names_what_is_wrong():
    model = Transformer(d_model=4, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                        dim_feedforward=8, batch_first=True)
    with pytest.raises(ValueError, match=r"src of shape \(2, 3, 4\) and tgt of shape \(1, 3, 4\) "
                                         r"have different batch sizes"):
        model(mv.randn(2, 3, 4), mv.randn(1, 3, 4))
    with pytest.raises(ValueError, match="must both end in d_model=4"):
        model(mv.randn(2, 3, 4), mv.randn(2, 3, 5))
    with pytest.raises(ValueError, match="activation should be 'relu', 'gelu' or a callable, "
                                         "not 'tanh'"):
        TransformerEncoderLayer(4, 2, activation="tanh")


def test_transformer_float32_on_backend(backend):
    exact = _randomize(Transformer(8, 2, 1, 1, 16, dropout=0.0, batch_first=True).double())
    fast = copy.deepcopy(exact).to(backend).float()
    src, tgt = _layout(True, 2, 3, d=8), _layout(True, 2, 4, d=8, seed=1)
    mask = Transformer.generate_square_subsequent_mask(4)
    results = []
    for model, dtype, device in ((exact, "float64", "numpy"), (fast, "float32", backend)):
        y = model(mv.tensor(src, dtype=dtype, device=device),
                  mv.tensor(tgt, dtype=dtype, device=device),
                  tgt_mask=mask.to(device), tgt_is_causal=True)
        assert y.dtype == dtype and y.device == device
        y.backward(mv.tensor(_rng(2).standard_normal(y.shape), dtype=dtype, device=device))
        results.append([y] + [p.grad for p in model.parameters()])
    for ours, expected in zip(results[1], results[0]):
        assert_close(ours, expected, rtol=1e-4)
