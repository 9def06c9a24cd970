"""What the training commands share: the run directory, the update step, the training loop,
seeded random streams and command-line errors.

A run directory is a model directory (config.json + model.safetensors, written by
minivlm.save_pretrained) with, beside it,

    training_state.safetensors   what resuming needs: the optimizer's moments and step counts,
                                 the step reached, the command's settings (JSON metadata)
    metrics.jsonl                one JSON object per step: step, loss, lr, seconds, ...
    results.json                 the evaluation's results
    *.png                        figures drawn from metrics.jsonl and results.json

Every step s draws its data from a generator seeded with (seed, s), and the backend's generators
(dropout) are reseeded with (seed, s) too, so the step reached is the whole random state: a run
resumed from its directory continues bit for bit as one never interrupted.

Data parallel (`mpiexec -n N python -m minivlm COMMAND`, minivlm.distributed): every rank draws
the step's global batch and trains on its shard (distributed.shard); `fit` broadcasts the
parameters from rank 0 at the start and `update` averages the gradients over the ranks, so the
ranks stay equal; rank 0 alone writes the run directory (the others' Run keeps its metrics in
memory) and shows the progress. A run resumes on any number of ranks: each reads the directory.

    run = Run.start("runs/x", "train-lm", settings)       # or Run.resume("runs/x", "train-lm")
    model = ...; optimizer = adamw(model, lr, weight_decay)
    run.restore(optimizer)                                # the saved moments, when resuming
    fit(model, optimizer, schedule, loss_of_step, run, steps=..., seed=...)
"""
import contextlib
import json
import math
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import backend, distributed, io
from ..autograd import manual_seed
from ..optim import AdamW, clip_grad_norm_, decay_matrices_only
from ..pretrained import save_pretrained
from ..progress import progress

STATE_FILE = "training_state.safetensors"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
TRAIN_STREAM, EVAL_STREAM = 0, 1     # spawn keys that keep training and evaluation data apart


class CommandError(Exception):
    """A failure the command line reports in one line (exit status 1)."""


class UsageError(CommandError):
    """Arguments that cannot work together (exit status 2, as argparse's errors)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `fit`, after the step it came in was finished and saved; the message says
    how to continue (the command line prints it, exit status 130)."""


# --- random streams ---------------------------------------------------------------------------

def seeded_rng(seed, *key):
    """A NumPy Generator for an independent stream: seed, spawn key `key` (SeedSequence)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def seed_backends(seed, step):
    """Reseed the backends' generators (dropout, random tensors) for step `step` of a run; each
    rank of a data-parallel run gets its own stream (its own dropout masks)."""
    ranks = () if distributed.world_size() == 1 else (distributed.rank(),)
    manual_seed(int(seeded_rng(seed, TRAIN_STREAM, step, *ranks).integers(2 ** 63)))


# --- optimizing -------------------------------------------------------------------------------

def adamw(model, lr, weight_decay, **kwargs):
    """AdamW over the parameters that train (requires_grad), with weight decay on matrices only
    (not on biases, norm gains, logit_scale)."""
    trained = [p for p in model.parameters() if p.requires_grad]
    return AdamW(decay_matrices_only(trained), lr=lr, weight_decay=weight_decay, **kwargs)


def update(loss, optimizer, params, max_grad_norm):
    """One optimizer step on `loss`: gradients (averaged over the ranks of a data-parallel run),
    clipped to norm max_grad_norm, then the update. Returns the loss (its mean over the ranks) as
    a float; a loss or a gradient norm that is not finite stops the run before the parameters
    change."""
    value = distributed.average(loss.item())
    if not math.isfinite(value):
        raise CommandError(f"the loss is {value}: training diverged (try a smaller --lr)")
    optimizer.zero_grad()
    loss.backward()
    distributed.average_gradients(params)
    norm = clip_grad_norm_(params, max_grad_norm).item()
    if not math.isfinite(norm):
        raise CommandError(f"the gradient norm is {norm}: training diverged (try a smaller --lr)")
    optimizer.step()
    return value


def check_finite(params, step):
    """A CommandError when a parameter is not finite after `step` (so no checkpoint keeps it)."""
    for p in params:
        if not backend.xp_of(p.array).isfinite(p.array).all():
            raise CommandError(f"the parameters are not finite after step {step}: training "
                               f"diverged (try a smaller --lr)")


def fit(model, optimizer, schedule, loss_of_step, run, steps, seed, max_grad_norm=1.0,
        after_update=None, save_every=250, unit="it", scale=1, saved=None):
    """Train from run.step to `steps`: for each step s, loss_of_step(s) -> a scalar loss Tensor
    (or (loss, {name: float}) to log more), then `update`, after_update() (e.g. a clamp), the
    schedule; one metrics line per step and a checkpoint of `saved` (default: model) every
    `save_every` steps and at the end (where the run has a directory). Ctrl-C finishes the step
    under way, saves it and raises TrainingInterrupted (a second Ctrl-C stops at once). On
    several ranks: the parameters of rank 0 first, and its progress bar alone."""
    params = list(model.parameters())
    distributed.broadcast_parameters(params)
    model.train()
    bar = progress(range(run.step, steps), desc=run.command, unit=unit, scale=scale,
                   disable=not distributed.is_main())
    with interrupt_between_steps() as interrupted:
        for step in bar:
            seed_backends(seed, step)
            lr = optimizer.param_groups[0]["lr"]
            loss, metrics = loss_of_step(step), {}
            if isinstance(loss, tuple):
                loss, metrics = loss
            loss = update(loss, optimizer, params, max_grad_norm)
            if after_update is not None:
                after_update()
            schedule.step()
            run.log(step + 1, loss=loss, lr=lr, **metrics)
            bar.set(loss=loss)
            if (step + 1) % save_every == 0 or step + 1 == steps or interrupted:
                check_finite(params, step + 1)
                run.checkpoint(saved or model, optimizer)
            if interrupted:
                raise TrainingInterrupted(run.interrupted_message(steps))
    return run.losses()


@contextlib.contextmanager
def interrupt_between_steps():
    """Within: the first SIGINT (Ctrl-C) only appends to the list yielded, for the loop to stop
    after its step; the next raises KeyboardInterrupt at once. (Outside the main thread, where
    Python delivers no signal, the list stays empty.)"""
    requests = []

    def request(signum, frame):
        requests.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = signal.signal(signal.SIGINT, request)
    except ValueError:   # not the main thread
        yield requests
        return
    try:
        yield requests
    finally:
        signal.signal(signal.SIGINT, previous)


# --- the run directory ------------------------------------------------------------------------

class Run:
    """A training command's run: its directory (None: keep everything in memory, as on every rank
    of a data-parallel run but rank 0), the command's settings (a JSON-able dict), the step
    reached and the metrics logged so far."""

    def __init__(self, directory, command, settings, step=0, metrics=(), optimizer_state=None):
        self.directory = None if directory is None else Path(directory)
        self.command, self.settings, self.step = command, settings, step
        self.extra_config = {}   # entries the model's config.json gets (e.g. id2label)
        self.companions = {}     # {subdirectory: model} saved beside the model (PPO's value model)
        self.metrics, self.optimizer_state = list(metrics), optimizer_state
        self.started = time.monotonic() - (metrics[-1]["seconds"] if metrics else 0.0)

    @classmethod
    def start(cls, directory, command, settings):
        """A new run in `directory`; an error if it holds a run already. Rank 0 alone checks
        and writes it."""
        if directory is not None and distributed.is_main():
            return cls(check_out_directory(directory), command, settings)
        return cls(None, command, settings)

    @classmethod
    def resume(cls, directory, command):
        """The run saved in `directory` by `command`, at its last checkpoint."""
        directory = Path(directory)
        metadata = _state_metadata(directory, command)
        step = int(metadata["step"])
        model_step = io.read_safetensors_metadata(directory / "model.safetensors").get("step")
        if model_step != str(step):
            raise CommandError(f"{directory}: model.safetensors is from step {model_step} but "
                               f"{STATE_FILE} from step {step} (the run was stopped while "
                               f"saving); start a new run")
        metrics = [m for m in read_metrics(directory) if m["step"] <= step]
        run = cls(directory if distributed.is_main() else None, command,
                  json.loads(metadata["settings"]), step, metrics,
                  (io.load_safetensors(directory / STATE_FILE),
                   json.loads(metadata["param_groups"])))
        if run.directory is not None:
            run._rewrite_metrics()   # drops the lines of steps after the checkpoint
        return run

    def restore(self, optimizer):
        """Load the saved optimizer state (moments, step counts, lr) into `optimizer`."""
        if self.optimizer_state is None:
            return
        tensors, param_groups = self.optimizer_state
        count = sum(len(group["params"]) for group in optimizer.param_groups)
        keys = {name.split(".")[-1] for name in tensors}
        expected = {f"optimizer.{index}.{key}" for index in range(count) for key in keys}
        missing, unexpected = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
        if missing or unexpected:
            raise io.CheckpointError(self.directory / STATE_FILE,
                                     f"does not match the optimizer of {count} parameters: "
                                     f"missing {missing}, unexpected {unexpected}")
        state = {}
        for name, value in tensors.items():
            _, index, key = name.split(".")
            state.setdefault(int(index), {})[key] = int(value) if key == "step" else value
        optimizer.load_state_dict({"state": state, "param_groups": param_groups})

    def log(self, step, **values):
        """Record one step's metrics (step, the values, seconds since the run began)."""
        self.step = step
        record = {"step": step, **values, "seconds": round(time.monotonic() - self.started, 3)}
        self.metrics.append(record)
        if self.directory is not None:
            with open(self.directory / METRICS_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def losses(self):
        return [m["loss"] for m in self.metrics]

    def interrupted_message(self, steps):
        """What to tell a user who stopped the run at self.step of `steps`."""
        if self.directory is None:
            return f"interrupted at step {self.step} of {steps} (a run without a directory: " \
                   f"nothing saved)"
        return (f"interrupted at step {self.step} of {steps}, saved in {self.directory}: "
                f"continue with `minivlm {self.command} --resume {self.directory}`")

    def checkpoint(self, model, optimizer):
        """Save the model directory and the resume state at the current step."""
        if self.directory is None:
            return
        save_pretrained(model, self.directory, self.extra_config, {"step": str(self.step)})
        for name, companion in self.companions.items():
            save_pretrained(companion, self.directory / name, metadata={"step": str(self.step)})
        state = optimizer.state_dict()
        tensors = {f"optimizer.{index}.{key}": np.asarray(backend.to_numpy(value))
                   for index, values in state["state"].items() for key, value in values.items()}
        metadata = {"command": self.command, "step": str(self.step),
                    "settings": json.dumps(self.settings),
                    "param_groups": json.dumps(state["param_groups"])}
        io.save_safetensors(tensors, self.directory / STATE_FILE, metadata)

    def _rewrite_metrics(self):
        write_metrics(self.directory, self.metrics)


def _state_metadata(directory, command):
    """The metadata of the resume state in `directory`, checked to be `command`'s."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise UsageError(f"{directory} holds no {STATE_FILE}: it is not a run of {command} "
                         f"to resume")
    metadata = io.read_safetensors_metadata(path)
    if metadata.get("command") != command or not {"step", "settings", "param_groups"} <= \
            metadata.keys():
        raise UsageError(f"{directory} holds no run of {command} (its {STATE_FILE} is from "
                         f"{metadata.get('command')!r})")
    return metadata


def saved_step(directory, command):
    """The step the run of `command` saved in `directory` reached; None where there is none."""
    if not (Path(directory) / STATE_FILE).is_file():
        return None
    return int(_state_metadata(directory, command)["step"])


def saved_settings(directory, command):
    """The settings (a dict) of the run of `command` saved in `directory`; reads no tensor."""
    return json.loads(_state_metadata(directory, command)["settings"])


def check_out_directory(directory):
    """`directory` as a Path (created), after checking that a new run may be written there: not
    a file, no run nor model directory (whose files the run would replace), writable."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--out {directory} is a file, not a directory")
    if (directory / STATE_FILE).exists():
        raise UsageError(f"{directory} holds a run already: continue it with --resume "
                         f"{directory}, or choose another --out")
    if (directory / "config.json").exists() or (directory / "model.safetensors").exists():
        raise UsageError(f"--out {directory} holds a model directory (config.json, "
                         f"model.safetensors) that the run would replace: choose another --out")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):   # can the run write there?
            pass
    except OSError as error:
        raise UsageError(f"--out {directory} cannot be written: {error.strerror}") from None
    (directory / METRICS_FILE).unlink(missing_ok=True)
    return directory


def add_seed_and_out(parser, name):
    """The arguments every experiment takes: --seed, and --out (default runs/NAME)."""
    parser.add_argument("--seed", type=int, default=0, help="(default %(default)s)")
    parser.add_argument("--out", default=f"runs/{name}",
                        help="where results.json, metrics.jsonl and the figure go "
                             "(default %(default)s)")


def read_metrics(directory):
    """The records of metrics.jsonl (a line cut short by a kill is skipped)."""
    path = Path(directory) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_metrics(directory, records):
    """metrics.jsonl in `directory`: one JSON object per record (a dict), replacing the file."""
    with io.atomic_write(Path(directory) / METRICS_FILE) as f:
        f.write("".join(json.dumps(record) + "\n" for record in records).encode("utf-8"))


def write_results(directory, results, name=RESULTS_FILE):
    """results.json (or `name`) in `directory`: a dict of numbers, lists and NumPy values."""
    with io.atomic_write(Path(directory) / name) as f:
        f.write(json.dumps(results, indent=2, default=_plain).encode("utf-8"))


def read_results(directory):
    return json.loads((Path(directory) / RESULTS_FILE).read_text(encoding="utf-8"))


def _plain(value):
    """NumPy values as the Python values json writes (arrays as nested lists)."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


# --- command-line arguments -------------------------------------------------------------------

def check_resume_flags(args, saved):
    """--resume continues the saved run with its own settings, in its own directory: the flags
    given must agree with `saved` ({flag name: the run's value}), and --out with args.resume."""
    saved = {**saved, "out": Path(args.resume)}
    given = {name: getattr(args, name) for name in saved if getattr(args, name) is not None}
    given = {name: Path(value) if name == "out" else value for name, value in given.items()}
    conflicts = [f"--{name.replace('_', '-')} ({value}, {saved[name]})"
                 for name, value in given.items() if value != saved[name]]
    if conflicts:
        raise UsageError("--resume continues the saved run with its own settings, in its own "
                         "directory; these flags differ from it (given, saved): "
                         + ", ".join(conflicts))


def positive(kind):
    """An argparse type: `kind` (int or float) that must be > 0 (and finite)."""
    def parse(text):
        value = kind(text)
        if not value > 0 or not math.isfinite(value):
            raise ValueError(text)
        return value
    parse.__name__ = f"positive {kind.__name__}"   # argparse names it: "invalid positive int value"
    return parse


def share(text):
    """An argparse type: a float in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(text)
    return value
