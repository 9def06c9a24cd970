"""Real PyTorch projects on minivlm with only their import lines changed (tests/ports.py), in
memory: vit-pytorch's ViT (vit.py) and SimpleViT (simple_vit.py), and coca-pytorch's CoCa with a
vit-pytorch image encoder. Each runs its constructor, forward, loss, backward and a few optimizer
steps of a ported training loop on minivlm, and is compared with the same file run by torch
from identical weights: loss 1e-5 relative, every gradient 1e-4, the parameters after the
steps 1e-5. No third-party code is committed: the test reads the installed peers' files."""
import numpy as np
import pytest

import minivlm as mv
from minivlm.testing import assert_close
from ports import installed_source, load, port

torch = pytest.importorskip("torch")
pytest.importorskip("einops")

# A training loop as a torch user writes it; it runs on both libraries, ported like the models.
TRAINER = '''
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def train(model, loss_of_batch, tensors, steps, lr=1e-3):
    loader = DataLoader(TensorDataset(*tensors), batch_size=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _, batch in zip(range(steps), loader):
        loss = loss_of_batch(model, *batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return losses
'''


def both(package, module):
    """The module `module` of the installed `package`, loaded twice: as is (torch) and ported."""
    source = installed_source(package, module)
    return load(f"torch_{package}_{module}", source), load(f"ported_{package}_{module}",
                                                          port(source))


def copy_weights(theirs, ours):
    """ours gets torch's initial parameters and buffers, by name (every one of them)."""
    state = {name: t.detach().numpy() for name, t in theirs.state_dict().items()}
    missing, unexpected = ours.load_state_dict(state)
    assert not missing and not unexpected
    return ours


def compare(make, loss_of_batch, batches, steps=3):
    """Build the model with each library (make(module_pair_index)), then compare the first
    loss and gradients and the training that follows."""
    torch.manual_seed(0)
    mv.manual_seed(0)
    theirs_model, ours_model = make(0), make(1)
    copy_weights(theirs_model, ours_model)
    torch_trainer, ours_trainer = (load(f"{name}_trainer", source) for name, source in
                                   (("torch", TRAINER), ("ported", port(TRAINER))))

    theirs_batch = [torch.from_numpy(b) for b in batches]
    ours_batch = [mv.tensor(b) for b in batches]
    theirs_loss = loss_of_batch(theirs_model, *(b[:2] for b in theirs_batch))
    ours_loss = loss_of_batch(ours_model, *(b[:2] for b in ours_batch))
    assert_close(ours_loss.item(), theirs_loss.item(), rtol=1e-5)
    theirs_loss.backward()
    ours_loss.backward()
    theirs_params = dict(theirs_model.named_parameters())
    for name, param in ours_model.named_parameters():
        theirs_grad = theirs_params[name].grad          # None where the loss does not reach
        assert (param.grad is None) == (theirs_grad is None), name
        if theirs_grad is not None:
            assert_close(param.grad, theirs_grad.numpy(), rtol=1e-4, atol=1e-9)
    ours_model.zero_grad()

    theirs_losses = torch_trainer.train(theirs_model, loss_of_batch, theirs_batch, steps)
    ours_losses = ours_trainer.train(ours_model, loss_of_batch, ours_batch, steps)
    assert len(ours_losses) == steps
    assert_close(ours_losses, theirs_losses, rtol=1e-5)
    for name, param in ours_model.named_parameters():
        assert_close(param, theirs_params[name].detach().numpy(), rtol=1e-5)


def images_and_labels(n=6, size=16, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, 3, size, size)).astype(np.float32),
            rng.integers(0, classes, n)]


@pytest.mark.parametrize("module, name, extra", [
    ("vit", "ViT", dict(dropout=0.0, emb_dropout=0.0, pool="cls")),
    ("vit", "ViT", dict(pool="mean")),
    ("simple_vit", "SimpleViT", {}),
])
def test_vit_pytorch_runs_unchanged_and_agrees_with_torch(module, name, extra):
    pair = both("vit_pytorch", module)

    def make(which):
        return getattr(pair[which], name)(image_size=16, patch_size=4, num_classes=5, dim=32,
                                          depth=2, heads=2, mlp_dim=48, dim_head=16, **extra)

    def loss_of_batch(model, x, y):
        lib = torch if isinstance(x, torch.Tensor) else mv
        return lib.nn.functional.cross_entropy(model(x), y)
    compare(make, loss_of_batch, images_and_labels())


def test_coca_pytorch_with_a_vit_pytorch_encoder_runs_unchanged_and_agrees_with_torch():
    """CoCa (contrastive captioner) on a SimpleViT wrapped in vit-pytorch's Extractor (forward
    hooks) as CoCa's README builds it: captioning loss + contrastive loss."""
    vits, extractors = both("vit_pytorch", "simple_vit"), both("vit_pytorch", "extractor")
    cocas = both("coca_pytorch", "coca_pytorch")

    def make(which):
        vit = vits[which].SimpleViT(image_size=16, patch_size=4, num_classes=5, dim=32, depth=1,
                                    heads=2, mlp_dim=48, dim_head=16)
        encoder = extractors[which].Extractor(vit, return_embeddings_only=True, detach=False)
        return cocas[which].CoCa(dim=24, img_encoder=encoder, image_dim=32, num_tokens=40,
                                 unimodal_depth=1, multimodal_depth=1, dim_head=8, heads=3,
                                 num_img_queries=4, caption_loss_weight=1.0,
                                 contrastive_loss_weight=1.0)

    def loss_of_batch(model, text, images):
        return model(text, images=images, return_loss=True)
    rng = np.random.default_rng(1)
    text = rng.integers(1, 40, (6, 7))
    text[0, 5:] = 0                         # padding (pad_id 0) the text CLS token skips
    compare(make, loss_of_batch, [text, images_and_labels()[0]])
