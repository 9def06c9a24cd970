"""reference/ against independent implementations: torch, transformers, and facts worked out by hand.

Everything runs in float64, so agreement is expected to ~1e-10.
"""
import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from reference import attention as ra
from reference import clip as rc
from reference import llama as rl
from reference import resnet as rr
from reference import swin as rs
from reference import transformer as rt
from reference import vit as rv

SETTINGS = settings(max_examples=20, deadline=None)


def assert_close(actual, expected, rtol=1e-9, atol=1e-10):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def randomize_(module, seed, std=0.5):
    """Give every parameter and buffer of a torch module random values (biases and norms included,
    so a swapped or dropped term shows), in float64; running variances stay positive."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    module.double().eval()
    with torch.no_grad():
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen, dtype=torch.float64))
            else:
                tensor.copy_(std * torch.randn(tensor.shape, generator=gen, dtype=torch.float64))
    return module


def numpy_state(module):
    return {name: t.detach().numpy() for name, t in module.state_dict().items()}


# --------------------------------------------------------------------------------------- attention


@SETTINGS
@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**31))
def test_softmax_rows_sum_to_one_and_are_positive(rows, cols, seed):
    E = 30 * np.random.default_rng(seed).standard_normal((rows, cols))
    A = ra.softmax(E, axis=1)
    assert_close(A.sum(axis=1), np.ones(rows))
    assert (A > 0).all()


def test_softmax_by_hand():
    e = np.exp([1.0, 2.0, 3.0])
    assert_close(ra.softmax(np.array([[1.0, 2.0, 3.0]]), axis=1), [e / e.sum()])


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4),
       st.integers(0, 2**31))
def test_attention_matches_torch_sdpa(N_Q, N_X, D_X, D_Q, D_V, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    Q, X = rng.standard_normal((N_Q, D_Q)), rng.standard_normal((N_X, D_X))
    W_K, W_V = rng.standard_normal((D_X, D_Q)), rng.standard_normal((D_X, D_V))
    expected = torch.nn.functional.scaled_dot_product_attention(
        *map(torch.from_numpy, (Q, X @ W_K, X @ W_V)))
    assert_close(ra.attention(Q, X, W_K, W_V), expected.numpy())


def test_attention_by_hand():
    # Two inputs, one query: E = [q·k1, q·k2]/√2 = [1/√2, 0]; Y = A1 v1 + A2 v2.
    Q = np.array([[1.0, 0.0]])
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    identity = np.eye(2)
    a1 = np.exp(1 / np.sqrt(2)) / (np.exp(1 / np.sqrt(2)) + 1)
    assert_close(ra.attention(Q, X, identity, identity), [[a1, 1 - a1]])


@SETTINGS
@given(st.integers(1, 7), st.integers(1, 4), st.integers(0, 2**31))
def test_masked_self_attention_never_looks_ahead(N_X, D, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N_X, D))
    W_Q, W_K, W_V = rng.standard_normal((3, D, D))
    A = ra.attention_weights(X @ W_Q, X @ W_K, ra.causal_mask(N_X))
    assert (np.triu(A, k=1) == 0).all()
    assert_close(A.sum(axis=1), np.ones(N_X))
    # Changing the last vector changes no output before it.
    X_changed = X.copy()
    X_changed[-1] += 1.0
    Y, Y_changed = ra.masked_self_attention(X, W_Q, W_K, W_V), ra.masked_self_attention(X_changed, W_Q, W_K, W_V)
    assert_close(Y[:-1], Y_changed[:-1])
    assert Y[0] == pytest.approx((X @ W_V)[0])  # the first vector can only see itself


def test_masked_self_attention_matches_torch_causal():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 3))
    W_Q, W_K, W_V = rng.standard_normal((3, 3, 3))
    expected = torch.nn.functional.scaled_dot_product_attention(
        *map(torch.from_numpy, (X @ W_Q, X @ W_K, X @ W_V)), is_causal=True)
    assert_close(ra.masked_self_attention(X, W_Q, W_K, W_V), expected.numpy())


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4),
       st.sampled_from(["none", "bool", "float", "causal"]), st.integers(0, 2**31))
def test_scaled_dot_product_attention_matches_torch(batch, L, S, E, mask_kind, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(shape) for shape in [(batch, 2, L, E), (batch, 2, S, E), (batch, 2, S, 3)])
    kwargs = {}
    if mask_kind == "bool":
        allowed = rng.random((L, S)) < 0.6
        allowed[:, 0] = True  # every query may see something
        kwargs["attn_mask"] = allowed
    elif mask_kind == "float":
        kwargs["attn_mask"] = rng.standard_normal((batch, 1, L, S))
    elif mask_kind == "causal":
        kwargs["is_causal"] = True
    expected = F.scaled_dot_product_attention(
        *map(torch.from_numpy, (q, k, v)),
        **{key: torch.from_numpy(m) if isinstance(m, np.ndarray) else m for key, m in kwargs.items()})
    assert_close(ra.scaled_dot_product_attention(q, k, v, **kwargs), expected.numpy())


def torch_mha(embed_dim, num_heads, seed, bias=True):
    torch = pytest.importorskip("torch")
    mha = torch.nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True)
    return randomize_(mha, seed)


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 3), st.integers(0, 2**31))
def test_slide_multihead_self_attention_is_torch_mha_without_bias(N_X, num_heads, head_dim, seed):
    torch = pytest.importorskip("torch")
    E = num_heads * head_dim
    mha = torch_mha(E, num_heads, seed, bias=False)
    X = np.random.default_rng(seed).standard_normal((N_X, E))
    expected, _ = mha(*[torch.from_numpy(X)[None]] * 3)

    W_q, W_k, W_v = np.split(mha.in_proj_weight.detach().numpy(), 3)
    heads = [slice(h * head_dim, (h + 1) * head_dim) for h in range(num_heads)]
    Y = ra.multihead_self_attention(X, [W_q[h].T for h in heads], [W_k[h].T for h in heads],
                                    [W_v[h].T for h in heads], mha.out_proj.weight.detach().numpy().T)
    assert_close(Y, expected[0].detach().numpy())


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(1, 3), st.integers(1, 3),
       st.sampled_from(["bool", "float"]), st.sampled_from([2, 3]), st.booleans(), st.integers(0, 2**31))
def test_multihead_attention_matches_torch(N, L, S, num_heads, head_dim, mask_kind, mask_ndim,
                                           use_padding, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    E = num_heads * head_dim
    mha = torch_mha(E, num_heads, seed)
    query, key, value = rng.standard_normal((N, L, E)), rng.standard_normal((N, S, E)), rng.standard_normal((N, S, E))
    mask_shape = (L, S) if mask_ndim == 2 else (N * num_heads, L, S)
    if mask_kind == "bool":
        attn_mask = rng.random(mask_shape) < 0.3
        attn_mask[..., 0] = False  # key 0 always allowed: no row is fully masked
        key_padding_mask = rng.random((N, S)) < 0.3
        key_padding_mask[:, 0] = False
    else:
        attn_mask = rng.standard_normal(mask_shape)
        key_padding_mask = rng.standard_normal((N, S))
    key_padding_mask = key_padding_mask if use_padding else None

    Y, A = ra.multihead_attention(query, key, value, numpy_state(mha), num_heads, key_padding_mask, attn_mask)
    expected_Y, expected_A = mha(
        *map(torch.from_numpy, (query, key, value)), attn_mask=torch.from_numpy(attn_mask),
        key_padding_mask=None if key_padding_mask is None else torch.from_numpy(key_padding_mask),
        need_weights=True, average_attn_weights=False)
    assert_close(Y, expected_Y.detach().numpy())
    assert_close(A, expected_A.detach().numpy())


def test_multihead_attention_rejects_bad_input():
    weights = {"in_proj_weight": np.zeros((12, 4)), "out_proj.weight": np.zeros((4, 4))}
    x = np.zeros((1, 2, 4))
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        ra.multihead_attention(x, x, x, weights, 3)
    with pytest.raises(ValueError, match=r"attn_mask \(3, 2\) should be \(L, S\) = \(2, 2\)"):
        ra.multihead_attention(x, x, x, weights, 2, attn_mask=np.zeros((3, 2)))


def test_attention_memory_of_a_transformer_on_pixels():
    R = 128
    assert R**4 == 268_435_456  # entries per attention matrix
    memory = ra.attention_memory(tokens=R * R, layers=48, heads=16, bytes_per_el=4)
    assert memory == 128**4 * 48 * 16 * 4 == 824_633_720_832
    assert memory == 768 * 2**30  # exactly 768 GiB: the slide's "768GB" counts in GiB (824.6 decimal GB)


# ------------------------------------------------------------------------------------- transformer


@SETTINGS
@given(st.integers(1, 4), st.integers(2, 9), st.floats(1e-12, 1e-2), st.integers(0, 2**31))
def test_layer_norm_matches_torch(rows, D, eps, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    h, gamma, beta = 5 * rng.standard_normal((rows, D)), rng.standard_normal(D), rng.standard_normal(D)
    t = torch.from_numpy
    expected = torch.nn.functional.layer_norm(t(h), (D,), t(gamma), t(beta), eps)
    assert_close(rt.layer_norm(h, gamma, beta, eps), expected.numpy())


def test_layer_norm_uses_the_1_over_D_variance():
    # [1, 3]: μ = 2, deviations ±1, so σ = 1 with the 1/D (the slide's σ without it would be √2).
    y = rt.layer_norm(np.array([[1.0, 3.0]]), np.ones(2), np.zeros(2), eps=0.0)
    assert_close(y, [[-1.0, 1.0]])


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_mlp_matches_torch(activation):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(1)
    x, W1, b1, W2, b2 = (rng.standard_normal(s) for s in [(2, 3, 4), (6, 4), (6,), (4, 6), (4,)])
    t = dict(zip("x W1 b1 W2 b2".split(), map(torch.from_numpy, (x, W1, b1, W2, b2))))
    expected = F.linear(getattr(F, activation)(F.linear(t["x"], t["W1"], t["b1"])), t["W2"], t["b2"])
    assert_close(rt.mlp(x, W1, b1, W2, b2, activation), expected.numpy())


def test_unknown_activation_names_the_valid_ones():
    with pytest.raises(ValueError, match="'swish'.*'gelu', 'relu'"):
        rt.mlp(np.zeros((1, 2)), np.zeros((2, 2)), None, np.zeros((2, 2)), None, "swish")


def test_sinusoidal_positional_encoding_by_hand():
    PE = rt.sinusoidal_positional_encoding(3, 4)
    # d = 4: frequencies 1/10000^(0/4) = 1 and 1/10000^(2/4) = 1/100.
    expected = [[np.sin(p), np.cos(p), np.sin(p / 100), np.cos(p / 100)] for p in range(3)]
    assert_close(PE, expected)
    odd = rt.sinusoidal_positional_encoding(2, 3)  # d = 3: dims 0, 2 are sin, dim 1 cos
    assert_close(odd[1], [np.sin(1), np.cos(1), np.sin(1 / 10000 ** (2 / 3))])


def torch_transformer_kwargs(norm_first, activation):
    return dict(nhead=2, dim_feedforward=12, dropout=0.0, activation=activation, norm_first=norm_first,
                batch_first=True, layer_norm_eps=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_matches_torch(norm_first, activation):
    torch = pytest.importorskip("torch")
    layer = randomize_(torch.nn.TransformerEncoderLayer(8, **torch_transformer_kwargs(norm_first, activation)), 2)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 8))
    src_mask = rng.random((5, 5)) < 0.4
    src_mask[:, 0] = False  # every query may see key 0
    padding = np.array([[False] * 5, [False, False, False, True, True]])
    # With gradients on, torch takes its plain path (the fused one may zero padded positions).
    expected = layer(torch.from_numpy(x), src_mask=torch.from_numpy(src_mask),
                     src_key_padding_mask=torch.from_numpy(padding))
    config = {"nhead": 2, "norm_first": norm_first, "activation": activation}
    actual = rt.encoder_layer(x, numpy_state(layer), config, src_mask, padding)
    assert_close(actual, expected.detach().numpy())


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_matches_torch(norm_first):
    torch = pytest.importorskip("torch")
    layer = randomize_(torch.nn.TransformerDecoderLayer(8, **torch_transformer_kwargs(norm_first, "relu")), 3)
    rng = np.random.default_rng(3)
    x, memory = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 6, 8))
    tgt_mask = ra.causal_mask(4)
    memory_padding = np.zeros((2, 6), dtype=bool)
    memory_padding[1, 4:] = True
    expected = layer(torch.from_numpy(x), torch.from_numpy(memory), tgt_mask=torch.from_numpy(tgt_mask),
                     memory_key_padding_mask=torch.from_numpy(memory_padding))
    actual = rt.decoder_layer(x, memory, numpy_state(layer), {"nhead": 2, "norm_first": norm_first},
                              tgt_mask=tgt_mask, memory_key_padding_mask=memory_padding)
    assert_close(actual, expected.detach().numpy())


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")  # torch's note about its fast path
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_decoder_matches_torch_transformer(norm_first):
    torch = pytest.importorskip("torch")
    kwargs = torch_transformer_kwargs(norm_first, "gelu")
    model = randomize_(torch.nn.Transformer(8, num_encoder_layers=2, num_decoder_layers=2, **kwargs), 4)
    rng = np.random.default_rng(4)
    src, tgt = rng.standard_normal((2, 6, 8)), rng.standard_normal((2, 4, 8))
    src_padding = np.zeros((2, 6), dtype=bool)
    src_padding[0, 5] = True
    tgt_mask = np.where(ra.causal_mask(4), -np.inf, 0.0)  # what nn.Transformer.generate_square_subsequent_mask gives
    expected = model(torch.from_numpy(src), torch.from_numpy(tgt), tgt_mask=torch.from_numpy(tgt_mask),
                     src_key_padding_mask=torch.from_numpy(src_padding),
                     memory_key_padding_mask=torch.from_numpy(src_padding))
    config = {"nhead": 2, "num_encoder_layers": 2, "num_decoder_layers": 2, "activation": "gelu",
              "norm_first": norm_first}
    actual = rt.transformer(src, tgt, numpy_state(model), config, tgt_mask=tgt_mask,
                            src_key_padding_mask=src_padding, memory_key_padding_mask=src_padding)
    assert_close(actual, expected.detach().numpy())


# --------------------------------------------------------------------------------------------- ViT


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.integers(0, 2**31))
def test_patch_embedding_is_a_convolution_with_stride_P(B, C, P, rows, cols, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    pixels, weight, bias = (rng.standard_normal(shape) for shape in [(B, C, rows * P, cols * P), (4, C, P, P), 4])
    conv = torch.nn.functional.conv2d(*map(torch.from_numpy, (pixels, weight, bias)), stride=P)
    expected = conv.flatten(2).transpose(1, 2)  # (B, N, D), patches in row-major order
    assert_close(rv.patch_embedding(pixels, weight, bias), expected.numpy())


def test_image_to_patches_by_hand():
    pixels = np.arange(2 * 4 * 4, dtype=float).reshape(1, 2, 4, 4)
    patches = rv.image_to_patches(pixels, 2)
    assert patches.shape == (1, 4, 8)
    # Second patch (top-right): channel 0 rows 0-1, cols 2-3, then channel 1.
    assert patches[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]
    with pytest.raises(ValueError, match="4×4 is not divisible into 3×3"):
        rv.image_to_patches(pixels, 3)


def to_checkpoint_names(state, renames):
    """Undo transformers 5's in-memory renames, giving the names in the checkpoint files (on
    transformers 4 the patterns do not match: its in-memory names are the checkpoint names)."""
    renamed = {}
    for name, tensor in state.items():
        for pattern, replacement in renames:
            name = re.sub(pattern, replacement, name)
        renamed[name] = tensor
    return renamed


def reload_from_checkpoint(model_class, config, state, tmp_path):
    """Write `state` as a checkpoint file and load it with from_pretrained: the names must be exactly
    those transformers reads from files."""
    from safetensors.torch import save_file

    config.save_pretrained(tmp_path)
    save_file({name: t.contiguous() for name, t in state.items()}, str(tmp_path / "model.safetensors"))
    model, info = model_class.from_pretrained(tmp_path, output_loading_info=True)
    # transformers 4 keeps Swin's relative_position_index as a buffer it expects, but builds it itself.
    missing = [name for name in info["missing_keys"] if not name.endswith("relative_position_index")]
    assert not missing and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.double().eval()


VIT_RENAMES = [
    (r"^(vit\.)?layers\.(\d+)\.", r"\1encoder.layer.\2."),
    (r"attention\.(q|k|v)_proj\.", lambda m: f"attention.attention.{dict(q='query', k='key', v='value')[m[1]]}."),
    (r"attention\.o_proj\.", "attention.output.dense."),
    (r"mlp\.fc1\.", "intermediate.dense."),
    (r"mlp\.fc2\.", "output.dense."),
]


def test_vit_matches_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12,
                                    image_size=12, patch_size=4, num_channels=3, num_labels=3)
    model = randomize_(transformers.ViTForImageClassification(config), 5)
    checkpoint = to_checkpoint_names(model.state_dict(), VIT_RENAMES)
    model = reload_from_checkpoint(transformers.ViTForImageClassification, config, checkpoint, tmp_path)

    pixels = np.random.default_rng(5).standard_normal((2, 3, 12, 12))
    with torch.no_grad():
        expected_hidden = model.vit(torch.from_numpy(pixels)).last_hidden_state.numpy()
        expected_logits = model(torch.from_numpy(pixels)).logits.numpy()
    weights = {name: t.numpy() for name, t in checkpoint.items()}
    hidden = rv.vit_last_hidden_state(pixels, ra.weights_under(weights, "vit."), config.to_dict())
    assert_close(hidden, expected_hidden)
    logits = rv.classification_head(hidden, weights["classifier.weight"], weights["classifier.bias"])
    assert_close(logits, expected_logits)


# -------------------------------------------------------------------------------------------- Swin


def test_attention_entries_global_vs_windows():
    assert rs.global_attention_entries(56, 56) == 56**4 == 9_834_496  # the slide's "56⁴ = 9.8M"
    assert round(rs.global_attention_entries(224 // 4, 224 // 4) / 1e6, 1) == 9.8
    assert rs.window_attention_entries(56, 56, 7) == 7**2 * 56 * 56 == 153_664  # M²HW
    assert rs.window_attention_entries(112, 112, 7) == 4 * rs.window_attention_entries(56, 56, 7)  # linear
    assert rs.global_attention_entries(112, 112) == 16 * rs.global_attention_entries(56, 56)  # quadratic


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3))
def test_window_partition_round_trip(B, rows, cols, M, C):
    x = np.random.default_rng(0).standard_normal((B, rows * M, cols * M, C))
    windows = rs.window_partition(x, M)
    assert windows.shape == (B * rows * cols, M, M, C)
    assert_close(windows[rows * cols - 1], x[0, -M:, -M:])  # the last window of image 0: bottom-right
    assert_close(rs.window_reverse(windows, M, rows * M, cols * M), x)


@pytest.mark.parametrize("M", [1, 2, 3, 7])
def test_relative_position_index_matches_transformers(M):
    torch = pytest.importorskip("torch")
    swin = pytest.importorskip("transformers.models.swin.modeling_swin")
    index = rs.relative_position_index(M)
    assert index.shape == (M * M, M * M)
    center = (M - 1) * (2 * M - 1) + (M - 1)  # Δ = (0, 0)
    assert (np.diag(index) == center).all()
    assert (index + index.T == 2 * center).all()  # Δ(j, i) = −Δ(i, j)
    assert set(index.ravel()) == set(range((2 * M - 1) ** 2))
    expected = swin.SwinRelativePositionBias(1, (M, M)).relative_position_index.view(M * M, M * M)
    assert (index == expected.numpy()).all()


def test_shift_mask_by_hand():
    # 4×4 map, window 2, shift 1: the top-left window holds only unwrapped tokens; the bottom-right one
    # holds tokens from four regions, so only each token with itself is allowed.
    mask = rs.shift_mask(4, 4, 2, 1)
    assert mask.shape == (4, 4, 4)
    assert (mask[0] == 0).all()
    assert (mask[3] == np.where(np.eye(4, dtype=bool), 0.0, -100.0)).all()
    # Top-right window: columns 2 (region 1) and 3 (region 2); rows 0, 1 both region 0.
    assert (mask[1] == np.where(np.array([0, 1, 0, 1])[:, None] == np.array([0, 1, 0, 1]), 0.0, -100.0)).all()


def test_window_and_shift():
    assert rs.window_and_shift((56, 56), 7, 0) == (7, 0)
    assert rs.window_and_shift((56, 56), 7, 1) == (7, 3)
    assert rs.window_and_shift((7, 7), 7, 1) == (7, 0)  # one window covers the map: nothing to shift
    assert rs.window_and_shift((5, 6), 7, 1) == (5, 0)


def test_patch_merging_matches_transformers():
    torch = pytest.importorskip("torch")
    swin = pytest.importorskip("transformers.models.swin.modeling_swin")
    merging = randomize_(swin.SwinPatchMerging(dim=3), 6)
    x = np.random.default_rng(6).standard_normal((2, 5 * 3, 3))  # odd height: padded
    with torch.no_grad():
        expected = merging(torch.from_numpy(x), (5, 3)).numpy()
    assert_close(rs.patch_merging(x, (5, 3), numpy_state(merging)), expected)


def test_patch_merging_order_by_hand():
    # 2×2 map of 1-channel tokens a b / c d -> one token [a, c, b, d] ((0,0), (1,0), (0,1), (1,1)).
    weights = {"norm.weight": np.ones(4), "norm.bias": np.zeros(4), "reduction.weight": np.eye(4)}
    x = np.array([[[1.0], [2.0], [3.0], [5.0]]])  # a=1, b=2, c=3, d=5
    merged = rs.patch_merging(x, (2, 2), weights)
    assert_close(merged, rt.layer_norm(np.array([[[1.0, 3.0, 2.0, 5.0]]]), np.ones(4), np.zeros(4)))


SWIN_RENAMES = [
    (r"attention\.(q|k|v)_proj\.", lambda m: f"attention.self.{dict(q='query', k='key', v='value')[m[1]]}."),
    (r"attention\.relative_position_bias\.relative_position_bias_table",
     "attention.self.relative_position_bias_table"),
    (r"attention\.o_proj\.", "attention.output.dense."),
    (r"mlp\.fc1\.", "intermediate.dense."),
    (r"mlp\.fc2\.", "output.dense."),
]


@pytest.mark.parametrize("image_size, window_size, absolute", [
    (64, 4, True),    # 16×16 -> 8×8 (shifted windows in both) -> 4×4 (one window, no shift)
    (42, 3, False),   # image padded to 44: 11×11 (windows padded to 12) -> 6×6 -> 3×3
])
def test_swin_matches_transformers(image_size, window_size, absolute, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.SwinConfig(image_size=image_size, patch_size=4, num_channels=3, embed_dim=8,
                                     depths=[2, 2, 2], num_heads=[2, 2, 4], window_size=window_size,
                                     mlp_ratio=2.0, use_absolute_embeddings=absolute)
    model = randomize_(transformers.SwinModel(config), 7)
    with torch.no_grad():  # a large relative position bias, so that a wrong index shows
        for name, table in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                table.mul_(4.0)
    checkpoint = {name: t for name, t in to_checkpoint_names(model.state_dict(), SWIN_RENAMES).items()
                  if not name.endswith("relative_position_index")}  # a buffer, not in newer checkpoints
    model = reload_from_checkpoint(transformers.SwinModel, config, checkpoint, tmp_path)

    pixels = np.random.default_rng(7).standard_normal((2, 3, image_size, image_size))
    with torch.no_grad():
        expected = model(torch.from_numpy(pixels)).last_hidden_state.numpy()
    weights = {name: t.numpy() for name, t in checkpoint.items()}
    assert_close(rs.swin_last_hidden_state(pixels, weights, config.to_dict()), expected)


def test_swin_rejects_a_table_of_the_wrong_window():
    weights = {"self.relative_position_bias_table": np.zeros((9, 1))}  # fits M = 2, not M = 3
    with pytest.raises(ValueError, match=r"\(9, 1\) does not fit window 3: expected 25 rows"):
        rs.window_attention(np.zeros((1, 9, 2)), (3, 3), weights, 1, 3, 0)


# ------------------------------------------------------------------------------------------ ResNet


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.integers(0, 2), st.integers(0, 2), st.booleans(), st.integers(0, 2**31))
def test_conv2d_matches_torch(B, C, O, k, stride, padding, extra, use_bias, seed):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    size = k + extra
    x, weight = rng.standard_normal((B, C, size, size + 1)), rng.standard_normal((O, C, k, k))
    bias = rng.standard_normal(O) if use_bias else None
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                                          None if bias is None else torch.from_numpy(bias), stride, padding)
    assert_close(rr.conv2d(x, weight, bias, stride, padding), expected.numpy())


def test_conv2d_names_both_shapes_on_a_channel_mismatch():
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 4\) has 2 channels, weight \(1, 3, 3, 3\)"):
        rr.conv2d(np.zeros((1, 2, 4, 4)), np.zeros((1, 3, 3, 3)))


def test_batch_norm_and_pools_match_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 7, 6))
    mean, weight, bias = rng.standard_normal((3, 3))
    var = rng.random(3) + 0.5
    t = torch.from_numpy
    assert_close(rr.batch_norm(x, mean, var, weight, bias),
                 F.batch_norm(t(x), t(mean), t(var), t(weight), t(bias), training=False, eps=1e-5).numpy())
    assert_close(rr.max_pool2d(x, 3, stride=2, padding=1), F.max_pool2d(t(x), 3, stride=2, padding=1).numpy())
    assert_close(rr.avg_pool2d(x, 2), F.avg_pool2d(t(x), 2).numpy())


def torch_resnets():
    """A re-statement in torch of torchvision's ResNet and of OpenAI CLIP's ModifiedResNet (same
    module names, so the same state dict names), at toy sizes."""
    import collections

    import torch
    from torch import nn
    F = nn.functional

    def conv_bn(inplanes, planes, k, stride=1):
        return nn.Conv2d(inplanes, planes, k, stride, k // 2, bias=False), nn.BatchNorm2d(planes)

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(inplanes, planes, 3, stride)
            self.conv2, self.bn2 = conv_bn(planes, planes, 3)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(*conv_bn(inplanes, planes, 1, stride))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return F.relu(out + (x if self.downsample is None else self.downsample(x)))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(inplanes, planes, 1)
            self.conv2, self.bn2 = conv_bn(planes, planes, 3, stride)
            self.conv3, self.bn3 = conv_bn(planes, planes * 4, 1)
            self.downsample = None
            if stride != 1 or inplanes != planes * 4:
                self.downsample = nn.Sequential(*conv_bn(inplanes, planes * 4, 1, stride))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return F.relu(out + (x if self.downsample is None else self.downsample(x)))

    class CLIPBottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(inplanes, planes, 1)
            self.conv2, self.bn2 = conv_bn(planes, planes, 3)
            self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
            self.conv3, self.bn3 = conv_bn(planes, planes * 4, 1)
            self.downsample = None
            if stride > 1 or inplanes != planes * 4:
                conv, bn = conv_bn(inplanes, planes * 4, 1)
                self.downsample = nn.Sequential(collections.OrderedDict(
                    [("-1", nn.AvgPool2d(stride)), ("0", conv), ("1", bn)]))

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.avgpool(F.relu(self.bn2(self.conv2(out))))
            out = self.bn3(self.conv3(out))
            return F.relu(out + (x if self.downsample is None else self.downsample(x)))

    def make_layers(module, block, inplanes, width, layers):
        for i, blocks in enumerate(layers):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            layer = [block(inplanes, planes, stride)]
            inplanes = planes * block.expansion
            layer += [block(inplanes, planes) for _ in range(1, blocks)]
            setattr(module, f"layer{i + 1}", nn.Sequential(*layer))
        return inplanes

    class ResNet(nn.Module):
        def __init__(self, block, layers, width=4, num_classes=5):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(3, width, 7, 2)
            features = make_layers(self, block, width, width, layers)
            self.fc = nn.Linear(features, num_classes)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    class AttentionPool2d(nn.Module):
        def __init__(self, spacial_dim, embed_dim, num_heads, output_dim):
            super().__init__()
            self.positional_embedding = nn.Parameter(torch.randn(spacial_dim**2 + 1, embed_dim))
            self.k_proj, self.q_proj, self.v_proj = (nn.Linear(embed_dim, embed_dim) for _ in range(3))
            self.c_proj = nn.Linear(embed_dim, output_dim)
            self.num_heads = num_heads

        def forward(self, x):
            x = x.flatten(start_dim=2).permute(2, 0, 1)  # NCHW -> (HW)NC
            x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
            x = x + self.positional_embedding[:, None, :]
            x, _ = F.multi_head_attention_forward(
                query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
                q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
                v_proj_weight=self.v_proj.weight, in_proj_weight=None,
                in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
                bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
                out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
                use_separate_proj_weight=True, training=False, need_weights=False)
            return x[0]

    class ModifiedResNet(nn.Module):
        def __init__(self, layers, output_dim, heads, input_resolution, width):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(3, width // 2, 3, 2)
            self.conv2, self.bn2 = conv_bn(width // 2, width // 2, 3)
            self.conv3, self.bn3 = conv_bn(width // 2, width, 3)
            make_layers(self, CLIPBottleneck, width, width, layers)
            self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

        def forward(self, x):
            for conv, bn in [(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)]:
                x = F.relu(bn(conv(x)))
            x = F.avg_pool2d(x, 2)
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.attnpool(x)

    names = "BasicBlock Bottleneck CLIPBottleneck ResNet AttentionPool2d ModifiedResNet"
    return collections.namedtuple("TorchResNets", names)(
        BasicBlock, Bottleneck, CLIPBottleneck, ResNet, AttentionPool2d, ModifiedResNet)


def run_torch(module, x):
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("block_name, inplanes, planes, stride", [
    ("BasicBlock", 4, 4, 1), ("BasicBlock", 4, 6, 2),
    ("Bottleneck", 8, 2, 1), ("Bottleneck", 4, 2, 2),
    ("CLIPBottleneck", 8, 2, 1), ("CLIPBottleneck", 4, 2, 1), ("CLIPBottleneck", 4, 2, 2),
])
def test_blocks_match_torch(block_name, inplanes, planes, stride):
    pytest.importorskip("torch")
    block = randomize_(getattr(torch_resnets(), block_name)(inplanes, planes, stride), 9)
    reference_block = {"BasicBlock": rr.basic_block, "Bottleneck": rr.bottleneck,
                       "CLIPBottleneck": rr.clip_bottleneck}[block_name]
    x = np.random.default_rng(9).standard_normal((2, inplanes, 6, 6))
    assert_close(reference_block(x, numpy_state(block), stride), run_torch(block, x))


@pytest.mark.parametrize("block_name", ["BasicBlock", "Bottleneck"])
def test_resnet_matches_torch(block_name):
    pytest.importorskip("torch")
    nets = torch_resnets()
    net = randomize_(nets.ResNet(getattr(nets, block_name), [2, 1, 1, 1]), 10)
    x = np.random.default_rng(10).standard_normal((2, 3, 32, 32))
    assert_close(rr.resnet(x, numpy_state(net)), run_torch(net, x))


def test_attention_pool_matches_torch():
    pytest.importorskip("torch")
    pool = randomize_(torch_resnets().AttentionPool2d(2, 8, 2, 6), 11)
    x = np.random.default_rng(11).standard_normal((3, 8, 2, 2))
    assert_close(rr.attention_pool2d(x, numpy_state(pool), num_heads=2), run_torch(pool, x))


def test_modified_resnet_matches_torch():
    pytest.importorskip("torch")
    width = 4
    net = randomize_(torch_resnets().ModifiedResNet([2, 1, 1, 1], output_dim=6, heads=width * 32 // 64,
                                                    input_resolution=64, width=width), 12)
    x = np.random.default_rng(12).standard_normal((2, 3, 64, 64))
    assert_close(rr.modified_resnet(x, numpy_state(net), num_heads=width * 32 // 64), run_torch(net, x))


# -------------------------------------------------------------------------------------------- CLIP


@SETTINGS
@given(st.integers(1, 6), st.integers(0, 2**31))
def test_cross_entropy_loss_matches_torch_on_both_axes(n, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    logits, labels = 5 * rng.standard_normal((n, n)), rng.permutation(n)
    t_logits, t_labels = torch.from_numpy(logits), torch.from_numpy(labels)
    assert_close(rc.cross_entropy_loss(logits, labels, axis=1), F.cross_entropy(t_logits, t_labels).item())
    assert_close(rc.cross_entropy_loss(logits, labels, axis=0), F.cross_entropy(t_logits.T, t_labels).item())


@SETTINGS
@given(st.integers(1, 5), st.integers(0, 2**31))
def test_clip_loss_matches_torch(n, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    I_f, T_f, W_i, W_t = (rng.standard_normal(s) for s in [(n, 5), (n, 4), (5, 3), (4, 3)])
    t = np.log(1 / 0.07)
    image = F.normalize(torch.from_numpy(I_f @ W_i), dim=-1)
    text = F.normalize(torch.from_numpy(T_f @ W_t), dim=-1)
    logits_per_image = np.exp(t) * image @ text.T
    labels = torch.arange(n)
    expected = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_image.T, labels)) / 2
    assert_close(rc.clip_loss(I_f, T_f, W_i, W_t, t), expected.item())


def test_clip_loss_by_hand():
    n = 4
    identity = np.eye(n)
    # Matching pairs identical and orthogonal to the rest, very low temperature: loss -> 0.
    assert rc.clip_loss(identity, identity, identity, identity, t=np.log(1000.0)) < 1e-12
    # All embeddings the same: every pair equally likely, loss = log n.
    same = np.ones((n, 2))
    assert_close(rc.clip_loss(same, same, np.eye(2), np.eye(2), t=0.0), np.log(n))


def test_zero_shot_prediction():
    rng = np.random.default_rng(13)
    W_t, W_i = rng.standard_normal((5, 3)), rng.standard_normal((6, 3))
    label_text_features = rng.standard_normal((4, 5))  # 4 classes
    classifier = rc.zero_shot_classifier(label_text_features, W_t)
    assert_close(np.linalg.norm(classifier, axis=1), np.ones(4))
    # Images whose embeddings are scaled copies of class 2's, then class 0's text embedding.
    image_embeddings = np.array([3.0 * classifier[2], 0.5 * classifier[0]])
    I_f = image_embeddings @ np.linalg.pinv(W_i)  # image features that project onto them
    assert rc.zero_shot_predict(I_f, W_i, classifier).tolist() == [2, 0]


# ------------------------------------------------------------------------------------------ llama
# reference/llama.py against the library (minivlm.functional, models.llama) in float64

def _mv():
    import minivlm as mv
    import minivlm.functional as F
    return mv, F


@SETTINGS
@given(rows=st.integers(1, 4), D=st.integers(2, 9), eps=st.sampled_from([1e-5, 1e-6]),
       seed=st.integers(0, 10_000))
def test_rms_norm_matches_the_library(rows, D, eps, seed):
    mv, F = _mv()
    rng = np.random.default_rng(seed)
    h, gamma = rng.standard_normal((rows, D)), rng.standard_normal(D)
    expected = F.rms_norm(mv.tensor(h), D, mv.tensor(gamma), eps).numpy()
    assert_close(rl.rms_norm(h, gamma, eps), expected)


def test_rms_norm_by_hand():
    h = np.array([[3.0, -4.0]])                 # rms = √((9 + 16) / 2) = √12.5
    assert_close(rl.rms_norm(h, np.ones(2), eps=0.0), h / np.sqrt(12.5))


@SETTINGS
@given(L=st.integers(1, 5), half=st.integers(1, 4), theta=st.sampled_from([10000.0, 500.0]),
       seed=st.integers(0, 10_000))
def test_rope_matches_the_library(L, half, theta, seed):
    mv, F = _mv()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, L, 2 * half))            # (N, heads, L, d)
    positions = rng.integers(0, 50, size=(2, L))
    cos, sin = F.rotary_cos_sin(positions, 2 * half, theta, "float64")
    expected = F.apply_rotary_pos_emb(mv.tensor(x), cos.unsqueeze(1), sin.unsqueeze(1)).numpy()
    assert_close(rl.rope(x, positions[:, None], theta), expected)


def test_rope_scores_depend_only_on_the_relative_position():
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal(8), rng.standard_normal(8)
    score = [rl.rope(q[None], [m])[0] @ rl.rope(k[None], [n])[0] for m, n in ((5, 2), (13, 10))]
    assert_close(score[0], score[1])


@SETTINGS
@given(kv_heads=st.integers(1, 3), group=st.integers(1, 3), L=st.integers(1, 4),
       S=st.integers(1, 4), masked=st.booleans(), seed=st.integers(0, 10_000))
def test_grouped_query_attention_matches_the_library(kv_heads, group, L, S, masked, seed):
    mv, F = _mv()
    rng = np.random.default_rng(seed)
    Q = rng.standard_normal((2, kv_heads * group, L, 3))
    K, V = rng.standard_normal((2, kv_heads, S, 3)), rng.standard_normal((2, kv_heads, S, 3))
    mask = np.triu(np.ones((L, S), dtype=bool), k=1) if masked and L <= S else None
    expected = F.scaled_dot_product_attention(
        mv.tensor(Q), mv.tensor(K), mv.tensor(V), enable_gqa=True,
        attn_mask=None if mask is None else ~mask).numpy()
    assert_close(rl.grouped_query_attention(Q, K, V, mask), expected)


def test_swiglu_mlp_matches_the_library():
    mv, _ = _mv()
    from minivlm.models.llama import LlamaConfig, LlamaMLP
    mlp = LlamaMLP(LlamaConfig(hidden_size=6, intermediate_size=7, num_attention_heads=1)).double()
    x = np.random.default_rng(0).standard_normal((2, 3, 6))
    W = {name: p.numpy() for name, p in mlp.state_dict().items()}
    assert_close(rl.swiglu_mlp(x, W["gate_proj.weight"], W["up_proj.weight"],
                               W["down_proj.weight"]), mlp(mv.tensor(x)).numpy())


def test_llama_block_and_model_match_the_library():
    """The committed fixture (GQA, head_dim 4 of hidden 30, rope_theta 500): one block, then the
    whole model."""
    from pathlib import Path

    mv, F = _mv()
    fixture = Path(__file__).with_name("fixtures") / "llama_tiny"
    model = mv.load_pretrained(fixture, dtype="float64")
    c = model.config
    config = dict(heads=c.num_attention_heads, kv_heads=c.num_key_value_heads,
                  head_dim=c.head_dim, rope_theta=c.rope_theta, eps=c.rms_norm_eps,
                  layers=c.num_hidden_layers)
    weights = {name: p.numpy() for name, p in model.state_dict().items()}
    ids = np.load(fixture / "expected.npz")["input_ids"]
    x = np.random.default_rng(1).standard_normal((2, 9, c.hidden_size))
    positions = np.broadcast_to(np.arange(9), (2, 9))
    causal = np.triu(np.ones((9, 9), dtype=bool), k=1)
    cos, sin = F.rotary_cos_sin(positions, c.head_dim, c.rope_theta, "float64")
    expected = model.model.layers[1](mv.tensor(x), cos.unsqueeze(1), sin.unsqueeze(1),
                                     mv.tensor(~causal)[None, None])
    assert_close(rl.llama_block(x, weights, "model.layers.1.", config, positions, causal),
                 expected.numpy())
    assert_close(rl.llama_logits(ids, weights, config), model(ids).numpy())
