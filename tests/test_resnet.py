"""The ResNets of minivlm.models.resnet against plain torch re-statements (torchvision does not
import beside the pinned torch) and against reference/resnet.py: parameter names and counts, and,
with the same weights, outputs and gradients in training and eval mode."""
import numpy as np
import pytest

import minivlm as mv
import minivlm.functional as F
from minivlm import optim
from minivlm.models.resnet import (BasicBlock, Bottleneck, ModifiedResNet, ResNet, resnet18,
                                   resnet50, small_resnet)
from minivlm.testing import assert_close
from reference import resnet as reference


def torch_resnets(torch):
    """torchvision's ResNet and OpenAI CLIP's ModifiedResNet, re-stated in plain torch."""
    nn, F = torch.nn, torch.nn.functional

    def conv_bn(inplanes, planes, kernel, stride=1):
        conv = nn.Conv2d(inplanes, planes, kernel, stride, kernel // 2, bias=False)
        return conv, nn.BatchNorm2d(planes)

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(inplanes, planes, 3, stride)
            self.conv2, self.bn2 = conv_bn(planes, planes, 3)
            self.downsample = nn.Sequential(*conv_bn(inplanes, planes, 1, stride)) \
                if stride != 1 or inplanes != planes else None

        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(out + (x if self.downsample is None else self.downsample(x)))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(inplanes, planes, 1)
            self.conv2, self.bn2 = conv_bn(planes, planes, 3, stride)
            self.conv3, self.bn3 = conv_bn(planes, planes * 4, 1)
            self.downsample = nn.Sequential(*conv_bn(inplanes, planes * 4, 1, stride)) \
                if stride != 1 or inplanes != planes * 4 else None

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
            return F.relu(out + (x if self.downsample is None else self.downsample(x)))

    def stages(module, block, width, layers):
        inplanes = width
        for i, blocks in enumerate(layers):
            planes = width * 2 ** i
            first = block(inplanes, planes, 1 if i == 0 else 2)
            inplanes = planes * block.expansion
            rest = [block(inplanes, planes) for _ in range(blocks - 1)]
            setattr(module, f"layer{i + 1}", nn.Sequential(first, *rest))
        return inplanes

    def run_stages(module, x):
        for i in range(1, 5):
            x = getattr(module, f"layer{i}")(x)
        return x

    class ResNet(nn.Module):
        def __init__(self, block, layers, num_classes=1000, width=64, small_images=False):
            super().__init__()
            kernel, stride = (3, 1) if small_images else (7, 2)
            self.conv1, self.bn1 = conv_bn(3, width, kernel, stride)
            self.small_images = small_images
            self.fc = nn.Linear(stages(self, block, width, layers), num_classes)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1(x)))
            if not self.small_images:
                x = F.max_pool2d(x, 3, 2, 1)
            return self.fc(run_stages(self, x).mean(dim=(2, 3)))

    class ClipBottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(inplanes, planes, 1)
            self.conv2, self.bn2 = conv_bn(planes, planes, 3)
            self.conv3, self.bn3 = conv_bn(planes, planes * 4, 1)
            self.stride = stride
            self.downsample = nn.Sequential(*conv_bn(inplanes, planes * 4, 1)) \
                if stride > 1 or inplanes != planes * 4 else None  # it follows an average pool

        def forward(self, x):
            out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
            out = self.bn3(self.conv3(F.avg_pool2d(out, self.stride)))
            identity = x if self.downsample is None \
                else self.downsample(F.avg_pool2d(x, self.stride))
            return F.relu(out + identity)

    class AttentionPool2d(nn.Module):
        def __init__(self, spacial_dim, embed_dim, num_heads, output_dim):
            super().__init__()
            self.positional_embedding = nn.Parameter(torch.randn(spacial_dim ** 2 + 1, embed_dim))
            self.k_proj = nn.Linear(embed_dim, embed_dim)
            self.q_proj = nn.Linear(embed_dim, embed_dim)
            self.v_proj = nn.Linear(embed_dim, embed_dim)
            self.c_proj = nn.Linear(embed_dim, output_dim)
            self.num_heads = num_heads

        def forward(self, x):  # as OpenAI: every token attends, the mean token's output is kept
            x = x.flatten(2).permute(2, 0, 1)
            x = torch.cat([x.mean(dim=0, keepdim=True), x]) + self.positional_embedding[:, None]
            x, _ = F.multi_head_attention_forward(
                x, x, x, x.shape[-1], self.num_heads, None,
                torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]), None, None,
                False, 0.0, self.c_proj.weight, self.c_proj.bias, need_weights=False,
                use_separate_proj_weight=True, q_proj_weight=self.q_proj.weight,
                k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight)
            return x[0]

    class ModifiedResNet(nn.Module):
        def __init__(self, layers, output_dim, heads, input_resolution, width):
            super().__init__()
            self.conv1, self.bn1 = conv_bn(3, width // 2, 3, 2)
            self.conv2, self.bn2 = conv_bn(width // 2, width // 2, 3)
            self.conv3, self.bn3 = conv_bn(width // 2, width, 3)
            stages(self, ClipBottleneck, width, layers)
            self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

        def forward(self, x):
            for i in (1, 2, 3):
                x = F.relu(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))
            return self.attnpool(run_stages(self, F.avg_pool2d(x, 2)))

    return {"BasicBlock": BasicBlock, "Bottleneck": Bottleneck, "ResNet": ResNet,
            "ModifiedResNet": ModifiedResNet}


@pytest.fixture(scope="module")
def torch_models():
    torch = pytest.importorskip("torch")
    return torch, torch_resnets(torch)


def _randomise(model, seed=0):
    """Every parameter and buffer to random values (running variances positive), so that no
    initial value (ones, zeros) can hide a mistake; weights N(0, 1/fan_in) keep the activations
    of order one (and the attention pool's softmax unsaturated). float64."""
    model.double()
    rng = np.random.default_rng(seed)
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        if name.endswith("running_var"):
            values = rng.uniform(0.5, 1.5, t.shape)
        else:
            fan_in = np.prod(t.shape[1:]) if t.ndim > 1 else 4
            values = rng.standard_normal(t.shape) / np.sqrt(fan_in)
        model.load_state_dict({name: values}, strict=False)
    return model


def _twin(torch, ours, theirs):
    """The torch model with our weights; strict loading checks that the names agree."""
    theirs.double().load_state_dict({name: torch.from_numpy(t.numpy().copy())
                                     for name, t in ours.state_dict().items()})
    return theirs


def _compare(torch, ours, theirs, x, rtol=1e-9):
    """Outputs, input gradients, parameter gradients and running statistics, after one forward
    and backward with the same output gradient."""
    our_x, their_x = mv.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, their_y = ours(our_x), theirs(their_x)
    assert_close(y, their_y.detach().numpy(), rtol=rtol)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    their_y.backward(torch.from_numpy(g))
    assert_close(our_x.grad, their_x.grad.numpy(), rtol=rtol)
    their_parameters = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():  # atol: attnpool.k_proj.bias gets a zero gradient
        assert_close(p.grad, their_parameters[name].grad.numpy(), rtol=rtol, atol=1e-10)
    their_state = theirs.state_dict()
    for name, t in ours.state_dict().items():
        assert_close(t, their_state[name].numpy(), rtol=rtol)


# --- torchvision's ResNets -----------------------------------------------------------------------

@pytest.mark.parametrize("build, blocks, layers, known", [
    (resnet18, "BasicBlock", (2, 2, 2, 2), 11_689_512),
    (resnet50, "Bottleneck", (3, 4, 6, 3), 25_557_032),
])
def test_parameter_count_and_names_match_torchvision(torch_models, build, blocks, layers, known):
    torch, restated = torch_models
    ours = build()
    theirs = restated["ResNet"](restated[blocks], layers)
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters()) == known
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [tuple(t.shape) for t in ours.state_dict().values()] == \
        [tuple(t.shape) for t in theirs.state_dict().values()]


@pytest.mark.parametrize("block, layers", [(BasicBlock, (1, 2, 1, 1)), (Bottleneck, (1, 1, 2, 1))])
@pytest.mark.parametrize("training", [True, False])
def test_small_resnet_matches_torch(torch_models, block, layers, training):
    torch, restated = torch_models
    ours = _randomise(small_resnet(num_classes=5, width=4, layers=layers, block=block))
    theirs = _twin(torch, ours, restated["ResNet"](restated[block.__name__], layers, 5, 4,
                                                   small_images=True))
    ours.train(training)
    theirs.train(training)
    x = np.random.default_rng(2).standard_normal((3, 3, 12, 10))
    _compare(torch, ours, theirs, x)


def test_imagenet_stem_resnet_matches_torch_and_the_reference(torch_models):
    """7×7 stride-2 stem and max pool; eval mode, also against reference/resnet.py."""
    torch, restated = torch_models
    ours = _randomise(ResNet(Bottleneck, (1, 1, 1, 1), num_classes=4, width=4)).eval()
    theirs = restated["ResNet"](restated["Bottleneck"], (1, 1, 1, 1), 4, 4)
    theirs = _twin(torch, ours, theirs).eval()
    x = np.random.default_rng(3).standard_normal((2, 3, 33, 30))
    _compare(torch, ours, theirs, x)
    weights = {name: t.numpy() for name, t in ours.state_dict().items()}
    assert_close(ours(mv.tensor(x)), reference.resnet(x, weights), rtol=1e-9)


def test_small_resnet_learns_a_toy_task():
    """A few SGD steps in training mode lower the loss on a fixed batch of 16×16 images."""
    mv.manual_seed(0)
    model = small_resnet(num_classes=2, width=4)
    rng = np.random.default_rng(0)
    labels = np.arange(8) % 2
    images = (rng.standard_normal((8, 3, 16, 16)) + labels[:, None, None, None]).astype("float32")
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(mv.tensor(images)), mv.tensor(labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# --- CLIP's modified ResNet ----------------------------------------------------------------------

def _tiny_clip_resnet():
    return ModifiedResNet(layers=(1, 2, 1, 1), output_dim=6, heads=4, input_resolution=64, width=8)


@pytest.mark.parametrize("training", [True, False])
def test_modified_resnet_matches_torch(torch_models, training):
    torch, restated = torch_models
    ours = _randomise(_tiny_clip_resnet())
    theirs = _twin(torch, ours, restated["ModifiedResNet"]((1, 2, 1, 1), 6, 4, 64, 8))
    ours.train(training)
    theirs.train(training)
    _compare(torch, ours, theirs, np.random.default_rng(4).standard_normal((2, 3, 64, 64)))


def test_modified_resnet_matches_the_reference():
    ours = _randomise(_tiny_clip_resnet(), seed=5).eval()
    x = np.random.default_rng(5).standard_normal((2, 3, 64, 64))
    weights = {name: t.numpy() for name, t in ours.state_dict().items()}
    assert_close(ours(mv.tensor(x)), reference.modified_resnet(x, weights, num_heads=4), rtol=1e-9)


def test_modified_resnet_has_openai_names_and_clip_initialisation():
    """OpenAI's keys (stem conv1..conv3, downsample.0/.1 after the avg pool "-1", attnpool), the
    last batch norm of each block zero, projections N(0, 1/embed_dim)."""
    mv.manual_seed(0)
    model = ModifiedResNet(layers=(1, 1, 1, 1), output_dim=16, heads=8, input_resolution=64,
                           width=16)
    names = list(model.state_dict())
    for key in ("conv3.weight", "bn3.running_var", "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.bias", "attnpool.positional_embedding",
                "attnpool.q_proj.weight", "attnpool.c_proj.bias"):
        assert key in names
    assert model.state_dict()["attnpool.positional_embedding"].shape == (2 * 2 + 1, 16 * 32)
    for i in range(1, 5):
        np.testing.assert_array_equal(model.state_dict()[f"layer{i}.0.bn3.weight"].numpy(), 0)
    std = model.attnpool.q_proj.weight.numpy().std()
    assert abs(std - (16 * 32) ** -0.5) < 0.05 * (16 * 32) ** -0.5


def test_attention_pool_names_the_feature_map_it_cannot_take():
    model = _tiny_clip_resnet()
    with pytest.raises(ValueError, match=r"\(1, 256, 3, 3\) gives 10 tokens.*\(5, 256\)"):
        model(mv.zeros(1, 3, 96, 96))
