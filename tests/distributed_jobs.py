"""What each rank runs for tests/test_distributed.py, launched as

    mpiexec -n 2 python -m mpi4py tests/distributed_jobs.py JOB OUT

(mpi4py's runner ends the whole job when a rank raises). A job saves what its rank computed
(OUT/rank{R}.npz, or run directories under OUT) for the test to check against values it computes
in one process; the inputs of each rank are `rank_array`'s, which the test recomputes."""
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import minivlm as mv
from minivlm import backend, distributed
from minivlm.data.text import corpus
from minivlm.models.clip import CLIPConfig, CLIPVisionConfig
from minivlm.models.lm import LMConfig, build_model
from minivlm.models.text import CLIPTextConfig
from minivlm.recipes import clip, lm, vision
from minivlm.tokenizers import BPETokenizer

TINY_CLIP = CLIPConfig(32, CLIPVisionConfig(image_resolution=16, layers=1, width=32, patch_size=8,
                                        heads=2),
                       CLIPTextConfig(context_length=16, width=32, layers=1, heads=2))
CLIP_CONFIG = clip.TrainConfig(model=TINY_CLIP, steps=20, batch_size=8, warmup_steps=2)
HALF = 10                                   # the step where the interrupted runs stop
PARAMETERS = [((3, 4), "float32"), ((5,), "float64"), ((), "float32"), ((2, 3), "float32")]
VISION = vision.ClassifierConfig("vit", image_size=16, options=dict(
    patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    intermediate_size=32))
SMALL_STEPS = 6


def rank_array(rank, shape, dtype="float64", salt=0):
    """Rank `rank`'s input of `shape`: the same on every process that asks."""
    rng = np.random.default_rng([rank, salt, len(shape)])
    return rng.standard_normal(shape).astype(dtype)


def gather_weights(rank, rows):
    """The weights w_r of rank r's loss Σ w_r · all_gather(x) over the gathered (2·rows, 4)."""
    return rank_array(rank, (2 * rows, 4), salt=1)


def collectives(out):
    xp, rank = backend.default_xp(), distributed.rank()
    results = {"summed": distributed.all_reduce(xp.asarray(rank_array(rank, (3, 4), "float32"))),
               "summed_ints": distributed.all_reduce(xp.arange(5) * (rank + 1)),
               "summed_scalar": distributed.all_reduce(xp.asarray(float(rank + 1))),
               "mean": np.asarray(distributed.average(rank + 1.0))}
    received = xp.asarray(rank_array(rank, (3, 4)))
    results["broadcast"] = distributed.broadcast(received, root=1)
    strided = xp.asarray(rank_array(rank, (4, 3))).T        # not contiguous: written back
    results["broadcast_strided"] = distributed.broadcast(strided, root=1)

    x = mv.tensor(rank_array(rank, (3, 4)), requires_grad=True)
    gathered = distributed.all_gather(x)
    (gathered * mv.tensor(gather_weights(rank, 3))).sum().backward()
    results["gathered"], results["gather_grad"] = gathered.array, x.grad.array

    params = [mv.Parameter(mv.zeros(*shape, dtype=dtype)) for shape, dtype in PARAMETERS]
    for index, (shape, dtype) in enumerate(PARAMETERS):
        params[index].grad = mv.tensor(rank_array(rank, shape, dtype, salt=2 + index))
    distributed.average_gradients(params, bucket_bytes=32)   # several buckets
    results |= {f"averaged{index}": param.grad.array for index, param in enumerate(params)}
    np.savez(out / f"rank{rank}.npz", **{k: backend.to_numpy(v) for k, v in results.items()})


def train_clip(out):
    """train-clip's training on these ranks: straight, stopped at HALF, and the one-process run
    the test stopped at HALF (out/one-half) resumed here."""
    clip.train(CLIP_CONFIG, out=out / "two")
    clip.train(CLIP_CONFIG, out=out / "two-half", stop_at=HALF)
    clip.train(resume=out / "one-half")


def vision_losses():
    """A small ViT's losses and model; rank 1 starts from other weights (fit broadcasts
    rank 0's)."""
    mv.manual_seed(distributed.rank())
    model = vision.build_model(VISION)
    return vision.train(model, VISION, SMALL_STEPS, batch_size=8), model


def masked_lm_losses():
    sentences = corpus(200, seed=0)
    tokenizer = BPETokenizer.train(sentences, 300)
    mv.manual_seed(0)
    model = build_model(LMConfig("mlm", tokenizer.vocab_size, 16, 32, 1, 2))
    return lm.train(model, tokenizer, lm.token_stream(sentences, tokenizer), SMALL_STEPS,
                    batch_size=8, lr=3e-3), model


def vision_and_lm(out):
    (vision_loss, vision_model), (lm_loss, lm_model) = vision_losses(), masked_lm_losses()
    if distributed.is_main():
        np.savez(out / "rank0.npz", vision=vision_loss, lm=lm_loss,
                 **{f"vision.{k}": v.numpy() for k, v in vision_model.state_dict().items()},
                 **{f"lm.{k}": v.numpy() for k, v in lm_model.state_dict().items()})


JOBS = {job.__name__: job for job in (collectives, train_clip, vision_and_lm)}

if __name__ == "__main__":
    with threadpool_limits(1, user_api="blas"):
        JOBS[sys.argv[1]](Path(sys.argv[2]))
