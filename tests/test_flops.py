"""minivlm.flops: each rule against a count by hand, whole models against torch's own counter
(torch.utils.flop_counter.FlopCounterMode on transformers' ViT and CLIP and on a torch ResNet),
the backward's factor of two, and a count that leaves the model as it found it."""
import numpy as np
import pytest

import minivlm as mv
from minivlm import nn
from minivlm.flops import count_flops
from minivlm.models.clip import CLIP, CLIPConfig, CLIPVisionConfig
from minivlm.models.resnet import AttentionPool2d, small_resnet
from minivlm.models.text import CLIPTextConfig
from minivlm.models.vit import ViT, ViTConfig
from minivlm.pretrained.clip import config_to_json


def zeros(*shape):
    return mv.tensor(np.zeros(shape, np.float32))


# --- by hand ------------------------------------------------------------------------------------

def test_a_linear_layer_counts_two_flops_per_multiply_add():
    # 2 × 4 rows, each a (3,) · (3, 5) product: 8 · 3 · 5 = 120 multiply-adds
    assert count_flops(nn.Linear(3, 5), zeros(2, 4, 3)) == 240


def test_a_convolution_counts_its_output_elements_times_its_kernel():
    # output (2, 4, 5, 5) = 200 elements, each 3 channels · 3 · 3 = 27 multiply-adds
    assert count_flops(nn.Conv2d(3, 4, 3, padding=1), zeros(2, 3, 5, 5)) == 2 * 200 * 27
    # stride 2 and two groups: output (1, 6, 3, 3) = 54 elements, each 2 channels · 3 · 3
    assert count_flops(nn.Conv2d(4, 6, 3, stride=2, groups=2), zeros(1, 4, 7, 7)) == 2 * 54 * 18


def test_multihead_attention_counts_projections_and_both_products():
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    query, key = zeros(2, 3, 8), zeros(2, 5, 8)
    projections = 2 * (2 * 3 * 8 * 8) * 2 + 2 * (2 * 5 * 8 * 8) * 2     # q and out; k and v
    products = 2 * (2 * 3 * 5 * 8) * 2                                  # q·kᵀ and weights·v
    assert count_flops(attention, query, key, key) == projections + products
    # sequence first: the same tokens, the same count
    assert count_flops(nn.MultiheadAttention(8, 2), query.transpose(0, 1), key.transpose(0, 1),
                       key.transpose(0, 1)) == projections + products


def test_the_attention_pool_has_one_query_per_image():
    pool = AttentionPool2d(spacial_dim=2, embed_dim=8, num_heads=2, output_dim=6)
    images, tokens = 3, 2 * 2 + 1
    q, k_and_v = 2 * images * 8 * 8, 2 * 2 * images * tokens * 8 * 8
    products, c_proj = 2 * 2 * images * tokens * 8, 2 * images * 8 * 6
    assert count_flops(pool, zeros(images, 8, 2, 2)) == q + k_and_v + products + c_proj


def test_a_cbow_text_encoder_costs_its_projection_alone():
    config = CLIPConfig(6, CLIPVisionConfig(8, 1, 8, 4, heads=2),
                        CLIPTextConfig(5, 11, 8, 1, 2, encoder="cbow"))
    ids = np.array([[9, 3, 10, 0, 0], [9, 10, 0, 0, 0]])
    assert count_flops(CLIP(config).text, ids) == 2 * 2 * 8 * 6


# --- whole models against torch's counter -------------------------------------------------------

def torch_flops(run):
    """FLOPs that torch.utils.flop_counter counts while run() runs."""
    flop_counter = pytest.importorskip("torch.utils.flop_counter")
    with flop_counter.FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def eager(config):
    """A transformers config whose attention is plain matrix products (torch's counter does not
    see inside the CPU kernel of scaled_dot_product_attention)."""
    config._attn_implementation = "eager"
    return config


def test_a_vit_classifier_counts_as_transformers_vit():
    transformers, torch = pytest.importorskip("transformers"), pytest.importorskip("torch")
    options = dict(image_size=16, patch_size=4, hidden_size=12, num_hidden_layers=2,
                   num_attention_heads=3, intermediate_size=20)
    ours = ViT(ViTConfig(num_classes=5, **options))
    theirs = transformers.ViTForImageClassification(eager(transformers.ViTConfig(num_labels=5,
                                                                                 **options)))
    pixels = np.zeros((2, 3, 16, 16), np.float32)
    assert count_flops(ours, mv.tensor(pixels)) == \
        torch_flops(lambda: theirs(pixel_values=torch.tensor(pixels)))


@pytest.mark.parametrize("text_length", [5, 7])
def test_a_clip_counts_as_transformers_clip_model(text_length):
    transformers, torch = pytest.importorskip("transformers"), pytest.importorskip("torch")
    ours = CLIP(CLIPConfig(6, CLIPVisionConfig(16, 2, 8, 4, heads=2, mlp_width=12),
                           CLIPTextConfig(7, 11, 8, 2, 2, mlp_width=10)))
    config_json = config_to_json(ours)
    theirs = transformers.CLIPModel(eager(transformers.CLIPConfig(
        text_config=config_json["text_config"], vision_config=config_json["vision_config"],
        projection_dim=6)))
    pixels = np.zeros((3, 3, 16, 16), np.float32)
    ids = np.random.default_rng(0).integers(0, 10, (3, text_length))
    ids[:, -1] = 10
    expected = sum(torch_flops(lambda: encode(**inputs)) for encode, inputs in (
        (theirs.get_image_features, {"pixel_values": torch.tensor(pixels)}),
        (theirs.get_text_features, {"input_ids": torch.tensor(ids)})))
    assert count_flops(ours, mv.tensor(pixels), ids) == expected


def test_a_small_resnet_counts_as_its_torch_restatement():
    torch = pytest.importorskip("torch")
    from test_resnet import torch_resnets
    restated = torch_resnets(torch)
    ours = small_resnet(num_classes=7, width=4, layers=(1, 2, 1, 1))
    theirs = restated["ResNet"](restated["BasicBlock"], (1, 2, 1, 1), 7, width=4,
                                small_images=True)
    pixels = np.zeros((2, 3, 16, 16), np.float32)
    assert count_flops(ours, mv.tensor(pixels)) == torch_flops(lambda: theirs(torch.tensor(pixels)))


def test_forward_and_backward_are_about_three_forwards():
    """The rule of clip-scaling's compute axis, checked with torch's counter on a ViT: the
    backward pass multiplies twice as much as the forward (input and weight gradients), less the
    pixels' gradient, which no one asks for."""
    transformers, torch = pytest.importorskip("transformers"), pytest.importorskip("torch")
    model = transformers.ViTForImageClassification(eager(transformers.ViTConfig(
        image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, num_labels=6)))
    pixels = torch.zeros(4, 3, 32, 32)
    forward = torch_flops(lambda: model(pixel_values=pixels))
    both = torch_flops(lambda: model(pixel_values=pixels).logits.sum().backward())
    assert 2.9 < both / forward <= 3


# --- the count changes nothing ------------------------------------------------------------------

def test_counting_leaves_batch_norm_statistics_and_the_training_flag_alone():
    model = small_resnet(num_classes=3, width=2)
    before = {name: t.numpy().copy() for name, t in model.state_dict().items()}
    images = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    count_flops(model, mv.tensor(images))
    assert model.training
    for name, value in model.state_dict().items():
        assert np.array_equal(value.numpy(), before[name]), name
    assert not any(module._forward_hooks for module in model.modules())
