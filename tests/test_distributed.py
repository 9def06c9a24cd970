"""Data parallelism (minivlm.distributed): the collectives, with the gather's gradient, on two
ranks that pytest launches with mpiexec (NumPy arrays over MPI; CuPy arrays over NCCL where
MINIVLM_TEST_BACKENDS includes cupy and two GPUs answer); train-clip on two ranks against one
process with the same global batch, resumed across rank counts; train-vision and train-lm on two
ranks; the command on two ranks; a rank that fails ending the job. On one process: the gathered
CLIP loss over simulated ranks against the reference, the buckets, the shards, and the clear
errors of a launch that cannot work."""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import distributed_jobs as jobs
import minivlm as mv
import minivlm.functional as F
from minivlm import distributed
from minivlm.__main__ import main
from minivlm.losses import clip_loss, gathered_clip_loss
from minivlm.recipes import clip
from minivlm.recipes.common import read_metrics, seed_backends
from minivlm.testing import assert_close, available_backends
from reference import clip as reference

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120          # seconds; each job takes a few on two idle cores: longer means a hang
MPIEXEC = (shutil.which("mpiexec", path=str(Path(sys.executable).parent))
           or shutil.which("mpiexec"))
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
    reason='mpiexec and mpi4py come with pip install -e ".[distributed]"')


def nccl_missing():
    """Why the NCCL path cannot be tested here, or None."""
    if "cupy" not in available_backends():
        return "the NCCL path runs where MINIVLM_TEST_BACKENDS includes cupy"
    import cupy
    gpus = cupy.cuda.runtime.getDeviceCount()
    return None if gpus >= 2 else f"NCCL needs a GPU per rank: {gpus} here"


BACKENDS = ["numpy", pytest.param("cupy", marks=pytest.mark.skipif(
    nccl_missing() is not None, reason=str(nccl_missing())))]


def mpiexec(*args, backend="numpy", timeout=TIMEOUT):
    """`mpiexec -n 2 ARGS...` from the repository root -> CompletedProcess (text). A job still
    running after `timeout` seconds is killed, all its processes, and the test fails."""
    env = {**os.environ, "MINIVLM_BACKEND": backend,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([MPIEXEC, "-n", "2", *map(str, args)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"mpiexec -n 2 {' '.join(map(str, args))} still ran after {timeout} s "
                    f"(a rank hangs); stderr:\n{err[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_job(name, out, backend="numpy"):
    """Run tests/distributed_jobs.py's job `name` on two ranks, writing under `out`."""
    result = mpiexec(sys.executable, "-m", "mpi4py", Path(jobs.__file__), name, out,
                     backend=backend)
    assert result.returncode == 0, result.stderr[-3000:]


def weights(directory):
    """The model saved in a run directory, as {name: NumPy array}."""
    model = mv.load_pretrained(directory)
    return {name: value.numpy() for name, value in model.state_dict().items()}


def assert_same_weights(got, expected):
    """The weights ({name: array}) of two float32 runs that differ in rounding only: the whole
    model to 1e-5 (measured: 1e-7) and each tensor to 1e-3 relative or 1e-5 absolute (the
    attention's key biases, whose gradient is rounding noise as softmax ignores them, differ by
    about 2e-6 after Adam's normalisation)."""
    assert_close(np.concatenate([got[name].ravel() for name in expected]),
                 np.concatenate([value.ravel() for value in expected.values()]), rtol=1e-5)
    for name, value in expected.items():
        assert_close(got[name], value, rtol=1e-3, atol=1e-5)


# --- the collectives on two ranks -------------------------------------------------------------

@needs_mpi
@pytest.mark.parametrize("backend", BACKENDS)
def test_collectives_on_two_ranks(backend, tmp_path):
    run_job("collectives", tmp_path, backend)
    inputs = [jobs.rank_array(rank, (3, 4)) for rank in range(2)]
    summed = jobs.rank_array(0, (3, 4), "float32") + jobs.rank_array(1, (3, 4), "float32")
    for rank in range(2):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert got["summed"].dtype == np.float32
        np.testing.assert_array_equal(got["summed"], summed)
        np.testing.assert_array_equal(got["summed_ints"], np.arange(5) * 3)
        assert got["summed_scalar"].shape == () and got["summed_scalar"] == 3.0
        assert got["mean"] == 1.5
        np.testing.assert_array_equal(got["broadcast"], inputs[1])          # root 1's values
        np.testing.assert_array_equal(got["broadcast_strided"], jobs.rank_array(1, (4, 3)).T)
        np.testing.assert_array_equal(got["gathered"], np.concatenate(inputs))
        # rank r's rows feed every rank's loss Σ w_s · gathered: the gradient is Σ_s w_s[rows r]
        rows = slice(3 * rank, 3 * rank + 3)
        weights_sum = jobs.gather_weights(0, 3)[rows] + jobs.gather_weights(1, 3)[rows]
        np.testing.assert_allclose(got["gather_grad"], weights_sum, rtol=1e-15)
        for index, (shape, dtype) in enumerate(jobs.PARAMETERS):
            grads = [jobs.rank_array(r, shape, dtype, salt=2 + index) for r in range(2)]
            averaged = got[f"averaged{index}"]
            assert averaged.dtype == dtype and averaged.shape == shape
            np.testing.assert_allclose(averaged, (grads[0] + grads[1]) / 2, rtol=1e-6)


# --- data-parallel training -------------------------------------------------------------------

@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_train_clip_on_two_ranks_equals_one_process_and_resumes_on_any_number(backend, tmp_path,
                                                                             monkeypatch):
    """20 steps of train-clip's training with a global batch of 8: on two ranks (4 pairs each,
    compared with all 8) and on one process the per-step losses agree to 1e-5 (measured: 1e-7)
    and so do the weights; a run stopped at step 10 on either resumes on the other."""
    monkeypatch.setenv("MINIVLM_BACKEND", backend)
    config = jobs.CLIP_CONFIG
    clip.train(config, out=tmp_path / "one")
    clip.train(config, out=tmp_path / "one-half", stop_at=jobs.HALF)
    run_job("train_clip", tmp_path, backend)
    clip.train(resume=tmp_path / "two-half")

    one = [m["loss"] for m in read_metrics(tmp_path / "one")]
    expected = weights(tmp_path / "one")
    assert len(one) == config.steps
    for run in ("two", "one-half", "two-half"):   # two ranks; 1 then 2; 2 then 1
        losses = [m["loss"] for m in read_metrics(tmp_path / run)]
        assert [m["step"] for m in read_metrics(tmp_path / run)] == list(range(1, 21)), run
        np.testing.assert_allclose(losses, one, rtol=1e-5, err_msg=run)
        assert_same_weights(weights(tmp_path / run), expected)


@needs_mpi
@pytest.mark.slow
def test_train_vision_and_masked_lm_on_two_ranks_equal_one_process(tmp_path):
    """Rank 1 builds its ViT from another seed: training starts from rank 0's weights all the same.
    The masked LM's ranks predict different numbers of masked tokens: each rank's share of the
    loss is normalised by the whole batch's count, so the mean over ranks is the batch's mean."""
    run_job("vision_and_lm", tmp_path)
    got = np.load(tmp_path / "rank0.npz")
    for name, (losses, model) in (("vision", jobs.vision_losses()),
                                  ("lm", jobs.masked_lm_losses())):
        np.testing.assert_allclose(got[name], losses, rtol=1e-5, err_msg=name)
        assert_same_weights({key: got[f"{name}.{key}"] for key in model.state_dict()},
                            {key: value.numpy() for key, value in model.state_dict().items()})


# each command's flags for a 3-step run, lines it prints once, files it writes
COMMAND_RUNS = {
    "train-clip": (["--image-size", 16], ["trained 3 steps", "zero-shot, prompt"],
                   {"results.json", *clip.FIGURES}),
    "train-vision": (["--image-size", 16, "--held-out", 40], ["parameters", "held-out accuracy:"],
                     {"results.json", "loss.png"}),
    "train-lm": (["--objective", "mlm", "--seq-len", 16, "--width", 32, "--layers", 1, "--heads",
                  2, "--sentences", 300, "--vocab-size", 300], ["tokenizer: trained", "perplexity"],
                 {"results.json", "loss.png", "tokenizer.json"}),
}


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("command", COMMAND_RUNS)
def test_a_command_on_two_ranks_prints_and_writes_once(command, tmp_path):
    flags, lines, files = COMMAND_RUNS[command]
    out = tmp_path / "run"
    result = mpiexec(sys.executable, "-m", "minivlm", command, "--steps", 3, "--batch-size", 8,
                     *flags, "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    for line in lines:
        assert result.stdout.count(line) == 1, result.stdout
    assert result.stderr.count(f"{command} 3/3") == 1, result.stderr     # one progress bar
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3]
    assert files <= {path.name for path in out.iterdir()}


@needs_mpi
def test_a_rank_that_fails_ends_the_whole_job_with_its_error(tmp_path):
    """Rank 1 raises at step 2 while rank 0 waits for it in an all-reduce: the job ends, with
    rank 1's error as the command's one line (TIMEOUT catches a hang)."""
    script = (
        "import sys; from minivlm import distributed; from minivlm.recipes import clip\n"
        "from minivlm.__main__ import main\n"
        "batch = clip.training_batch\n"
        "def failing(config, step, *args):\n"
        "    if distributed.rank() == 1 and step == 2:\n"
        "        raise OSError('the disk of rank 1 is gone')\n"
        "    return batch(config, step, *args)\n"
        "clip.training_batch = failing\n"
        f"sys.exit(main(['train-clip', '--steps', '5', '--batch-size', '8', '--image-size', "
        f"'16', '--out', {str(tmp_path / 'run')!r}]))\n")
    result = mpiexec(sys.executable, "-c", script)
    assert result.returncode != 0
    assert "minivlm train-clip: error: rank 1 of 2: the disk of rank 1 is gone" in result.stderr
    assert "trained" not in result.stdout


@needs_mpi
def test_train_vlm_on_two_ranks_is_one_clear_error_before_anything_is_written(tmp_path):
    result = mpiexec(sys.executable, "-m", "minivlm", "train-vlm", "--out", tmp_path / "run")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "train-vlm runs in one process, not on 2 ranks" in result.stderr
    assert not (tmp_path / "run").exists()


# --- one process ---------------------------------------------------------------------------------

def test_a_process_that_mpiexec_did_not_start_is_rank_0_of_1():
    x = mv.tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.all_gather(x) is x
    array = np.arange(4.0)
    summed = distributed.all_reduce(array)
    np.testing.assert_array_equal(summed, array)
    assert summed is not array
    assert distributed.broadcast(array) is array
    np.testing.assert_array_equal(distributed.shard(array), array)
    assert distributed.average(2.5) == 2.5


def test_gathered_clip_loss_over_simulated_ranks_is_the_whole_batch_loss(monkeypatch):
    """Two ranks of 4 pairs, simulated in one process (all_gather concatenates both ranks'
    tensors), against one process holding all 8: the mean of the ranks' losses is the whole
    batch's (NumPy reference, float64) and its gradients are those of the whole batch's loss."""
    rng = np.random.default_rng(0)
    images, texts = (rng.standard_normal((8, 5)) for _ in range(2))
    images, texts = (a / np.linalg.norm(a, axis=1, keepdims=True) for a in (images, texts))
    scale = np.log(1 / 0.07)
    expected = reference.clip_loss(images, texts, np.eye(5), np.eye(5), scale)

    whole = [mv.tensor(a, requires_grad=True) for a in (images, texts, np.asarray(scale))]
    clip_loss(whole[2].exp() * (whole[0] @ whole[1].T)).backward()
    image_shards, text_shards = ([mv.tensor(a[r * 4:(r + 1) * 4], requires_grad=True)
                                  for r in range(2)] for a in (images, texts))
    logit_scale = mv.tensor(np.asarray(scale), requires_grad=True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "all_gather", lambda x: F.cat(
        image_shards if any(x is s for s in image_shards) else text_shards, dim=0))
    losses = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        losses.append(gathered_clip_loss(image_shards[rank], text_shards[rank], logit_scale))
    mean = (losses[0] + losses[1]) / 2
    mean.backward()   # the gradients data parallelism averages over the ranks

    assert_close(mean.item(), expected, rtol=1e-12)
    for shards, full in ((image_shards, whole[0]), (text_shards, whole[1])):
        assert_close(np.concatenate([s.grad.numpy() for s in shards]), full.grad.numpy(),
                     rtol=1e-12)
    assert_close(logit_scale.grad.numpy(), whole[2].grad.numpy(), rtol=1e-12)


def test_clip_loss_rows_of_one_rank_must_fit_the_logits():
    with pytest.raises(ValueError, match=r"logits_per_text must have the shape .* \(2, 4\), "
                                         r"got \(2, 3\), and rows first=3"):
        clip_loss(mv.zeros(2, 4), mv.zeros(2, 3), first=3)
    with pytest.raises(ValueError, match=r"first=3 \.\.\. first \+ 2 must lie in \[0, 4\)"):
        clip_loss(mv.zeros(2, 4), mv.zeros(2, 4), first=3)


def test_buckets_keep_one_dtype_and_backend_and_a_size_limit():
    a, b, c, e = (mv.zeros(n) for n in (4, 2, 3, 100))
    d = mv.zeros(1, dtype="float64")
    groups = distributed.buckets([a, b, c, d, e], bucket_bytes=24)
    assert [[len(tensor) for tensor in group] for group in groups] == [[4, 2], [3], [1], [100]]
    assert distributed.buckets([a, b, c], bucket_bytes=2 ** 20) == [[a, b, c]]


def test_shards_are_the_rows_of_this_rank(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    monkeypatch.setattr(distributed, "rank", lambda: 2)
    images, labels = np.arange(16).reshape(8, 2), np.arange(8)
    shard_images, shard_labels = distributed.shard(images, labels)
    np.testing.assert_array_equal(shard_labels, [4, 5])
    np.testing.assert_array_equal(shard_images, images[4:6])
    with pytest.raises(ValueError, match="a global batch of 6 does not split evenly over 4 ranks"):
        distributed.shard(np.arange(6))


def test_each_rank_draws_its_own_random_numbers(monkeypatch):
    """Dropout masks differ between ranks (seed_backends keys each rank's stream by its rank)."""
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    draws = []
    for rank in (0, 1, 0):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        seed_backends(0, step=5)
        draws.append(mv.randn(4).numpy())
    np.testing.assert_array_equal(draws[0], draws[2])
    assert not np.allclose(draws[0], draws[1])


@pytest.fixture
def launched_by_mpiexec(monkeypatch):
    """This process as one of two that a launcher started (its environment says so)."""
    monkeypatch.setenv("PMI_SIZE", "2")
    distributed._world.cache_clear()
    yield
    distributed._world.cache_clear()


def test_a_launch_without_mpi4py_names_what_to_install(launched_by_mpiexec, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # import mpi4py fails
    with pytest.raises(RuntimeError, match=r"one of 2 started by mpiexec, but mpi4py cannot be "
                                           r"imported .*pip install \"minivlm\[distributed\]\""):
        distributed.world_size()
    assert main(["train-clip", "--steps", "1"]) == 1
    assert capsys.readouterr().err.startswith(
        "minivlm train-clip: error: this process is one of 2 started by mpiexec")


@needs_mpi
def test_an_mpiexec_of_another_mpi_library_is_an_error():
    """Open MPI's mpiexec sets OMPI_COMM_WORLD_SIZE, but mpi4py on MPICH then runs alone."""
    result = subprocess.run(
        [sys.executable, "-c", "from minivlm import distributed; distributed.world_size()"],
        cwd=ROOT, env={**os.environ, "OMPI_COMM_WORLD_SIZE": "2"}, capture_output=True,
        text=True, timeout=60)
    assert result.returncode == 1
    assert "mpiexec started 2 processes but MPI sees 1" in result.stderr
