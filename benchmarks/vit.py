"""One ViT training step (forward, cross-entropy, backward, AdamW) in minivlm and in torch.

The workload is a small ViT on 32×32 images: patch 4 (64 patches + the class token), width 192,
depth 6, 3 heads, MLP 768, 10 classes, batch 64, float32, AdamW. Both libraries start from the
same weights (the first losses are printed side by side) and run alternately; the medians are
printed with their ratio (minivlm / torch, target <= 1.0) and the achieved FLOP/s of each, next
to the machine's float32 matrix-multiply rate.

    PYTHONPATH=. python benchmarks/vit.py [--batch 64 --repeats 7]
    PYTHONPATH=. python benchmarks/vit.py --profile   # where minivlm's time goes (cProfile)
"""
import argparse
import cProfile
import pstats
import statistics

import numpy as np

import minivlm as mv
from benchmarks.timing import gemm_rate, timed
import minivlm.functional as F
from minivlm.models import ViT, ViTConfig
from minivlm.optim import AdamW


def benchmark_config():
    return ViTConfig(image_size=32, patch_size=4, hidden_size=192, num_hidden_layers=6,
                     num_attention_heads=3, intermediate_size=768, num_classes=10)


def train_step_flops(config, batch):
    """Multiply-adds ×2 of one step (backward = 2 × forward): the patch projection, per block the
    four D×D projections, the MLP and the two tokens×tokens products, and the head."""
    D, P, C = config.hidden_size, config.patch_size, config.num_channels
    patches = (config.image_size // P) ** 2
    tokens = patches + 1
    block = 4 * tokens * D * D + 2 * tokens * D * config.intermediate_size + 2 * tokens * tokens * D
    forward = (patches * C * P * P * D + config.num_hidden_layers * block
               + D * config.num_classes) * 2 * batch
    return 3 * forward


def minivlm_step(model, pixels, labels):
    """One training step of the minivlm model, as a closure returning the loss."""
    optimizer = AdamW(model.parameters(), lr=1e-3)
    pixels, labels = mv.tensor(pixels), mv.tensor(labels)

    def step():
        optimizer.zero_grad()
        loss = F.cross_entropy(model(pixels), labels)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def torch_vit(config, state_dict):
    """The same architecture in torch, with minivlm's parameter names, loaded with its weights."""
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads = heads
            self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

        def forward(self, x):
            B, N, D = x.shape

            def split_heads(t):
                return t.view(B, N, self.heads, D // self.heads).transpose(1, 2)
            y = nn.functional.scaled_dot_product_attention(split_heads(self.q(x)),
                                                           split_heads(self.k(x)),
                                                           split_heads(self.v(x)))
            return self.proj(y.transpose(1, 2).reshape(B, N, D))

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            D = c.hidden_size
            self.norm1 = nn.LayerNorm(D, eps=c.layer_norm_eps)
            self.attn = Attention(D, c.num_attention_heads)
            self.norm2 = nn.LayerNorm(D, eps=c.layer_norm_eps)
            self.mlp = nn.Sequential()
            self.mlp.fc1 = nn.Linear(D, c.intermediate_size)
            self.mlp.act = nn.GELU()
            self.mlp.fc2 = nn.Linear(c.intermediate_size, D)

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class TorchViT(nn.Module):
        def __init__(self, c):
            super().__init__()
            D, grid = c.hidden_size, c.image_size // c.patch_size
            self.patch_embed = nn.Conv2d(c.num_channels, D, c.patch_size, stride=c.patch_size)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, D))
            self.blocks = nn.ModuleList(Block(c) for _ in range(c.num_hidden_layers))
            self.norm = nn.LayerNorm(D, eps=c.layer_norm_eps)
            self.head = nn.Linear(D, c.num_classes)

        def forward(self, pixels):
            x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x)[:, 0])

    model = TorchViT(config)
    model.load_state_dict({name: torch.from_numpy(t.numpy().copy())
                           for name, t in state_dict.items()})
    return model


def torch_step(model, pixels, labels):
    import torch
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pixels, labels = torch.from_numpy(pixels), torch.from_numpy(labels)

    def step():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(pixels), labels)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile minivlm's step instead")
    args = parser.parse_args()

    config = benchmark_config()
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((args.batch, 3, config.image_size, config.image_size),
                                 dtype=np.float32)
    labels = rng.integers(0, config.num_classes, args.batch)
    mv.manual_seed(0)
    model = ViT(config)
    state_dict = model.state_dict()
    ours = minivlm_step(model, pixels, labels)
    if args.profile:
        ours()  # warm up
        cProfile.runctx("ours()", globals(), {"ours": ours}, "/tmp/vit.prof")
        pstats.Stats("/tmp/vit.prof").sort_stats("tottime").print_stats(20)
        return
    theirs = torch_step(torch_vit(config, state_dict), pixels, labels)
    first_losses = ours(), theirs()  # same weights, same data: the same loss; also a warm-up

    times = {"minivlm": [], "torch": []}
    for _ in range(args.repeats):
        times["minivlm"].append(timed(ours))
        times["torch"].append(timed(theirs))

    import torch
    flops = train_step_flops(config, args.batch)
    print(f"ViT training step: batch {args.batch}, image {config.image_size}, patch "
          f"{config.patch_size}, width {config.hidden_size}, depth {config.num_hidden_layers}, "
          f"{config.num_attention_heads} heads, MLP {config.intermediate_size}, "
          f"{config.num_classes} classes, AdamW, float32; median of {args.repeats}; "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"first-step loss: minivlm {first_losses[0]:.6f}, torch {first_losses[1]:.6f}")
    print(f"float32 matmul rate (NumPy BLAS): {gemm_rate() / 1e9:.1f} GFLOP/s")
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, median in medians.items():
        print(f"{name:8s} {median * 1e3:8.1f} ms   {flops / median / 1e9:6.1f} GFLOP/s")
    print(f"ratio minivlm / torch: {medians['minivlm'] / medians['torch']:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
