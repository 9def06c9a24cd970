"""Datasets and batches, as torch.utils.data: Dataset, TensorDataset, the samplers and DataLoader.

    loader = DataLoader(TensorDataset(images, labels), batch_size=32, shuffle=True,
                        generator=minivlm.Generator().manual_seed(0))
    for x, y in loader:            # x (32, ...), y (32,) Tensors; the last batch may be smaller
        ...

Batches are collated as torch's default_collate does: Tensors, NumPy arrays and numbers are
stacked into a Tensor, tuples and lists collated position by position, dicts key by key.
"""
import math

from .. import backend
from ..autograd import Tensor, tensor
from ..functional import stack


class Dataset:
    """A map-style dataset: subclasses define __getitem__(i) and __len__()."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} does not define __getitem__")


class TensorDataset(Dataset):
    """Sample i is (t[i] for t in tensors); every tensor has the same first dimension."""

    def __init__(self, *tensors):
        if len({len(t) for t in tensors}) > 1:
            raise ValueError(f"TensorDataset: the tensors' first dimensions differ: "
                             f"{[tuple(t.shape) for t in tensors]}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return len(self.tensors[0])


class SequentialSampler:
    """0, 1, ..., len(data_source) − 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler:
    """A random order of the indices (a new one for each pass); with replacement,
    num_samples indices drawn independently. generator: a minivlm.Generator (else the global
    generator, seeded by manual_seed)."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source, self.replacement, self.generator = data_source, replacement, generator
        self._num_samples = num_samples
        if num_samples is not None and not replacement and num_samples > len(data_source):
            raise ValueError(f"RandomSampler: num_samples={num_samples} without replacement "
                             f"exceeds the {len(data_source)} samples")

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        rng = (self.generator.rng(backend.numpy) if self.generator is not None
               else backend.rng(backend.numpy))
        n = len(self.data_source)
        if self.replacement:
            return iter(rng.integers(0, n, size=self.num_samples).tolist())
        return iter(rng.permutation(n)[:self.num_samples].tolist())

    def __len__(self):
        return self.num_samples


class BatchSampler:
    """Lists of batch_size indices from `sampler` (the last shorter, or dropped)."""

    def __init__(self, sampler, batch_size, drop_last):
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        rounding = math.floor if self.drop_last else math.ceil
        return rounding(len(self.sampler) / self.batch_size)


def default_collate(samples):
    """A list of samples -> one batch: Tensors, arrays and numbers stacked into a Tensor (numbers
    as torch.tensor makes them), tuples and lists position by position, dicts key by key."""
    first = samples[0]
    if isinstance(first, Tensor):
        return stack(samples)
    if backend.is_array(first) or isinstance(first, (int, float, bool)):
        return stack([tensor(s) for s in samples])
    if isinstance(first, dict):
        return {key: default_collate([s[key] for s in samples]) for key in first}
    if isinstance(first, (tuple, list)):
        return type(first)(default_collate(list(column)) for column in zip(*samples))
    if isinstance(first, str):
        return list(samples)
    raise TypeError(f"default_collate: cannot batch samples of type {type(first).__name__}")


class DataLoader:
    """Batches of a dataset: batch_size samples at a time, in order or shuffled (with
    `generator` for a reproducible order), collated by collate_fn (default_collate).
    num_workers and pin_memory are accepted for torch's signature; loading runs in this
    process."""

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False,
                 generator=None):
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: give either sampler or shuffle=True, not both")
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.collate_fn = collate_fn or default_collate
        if sampler is None:
            sampler = (RandomSampler(dataset, generator=generator) if shuffle
                       else SequentialSampler(dataset))
        self.sampler = sampler
        self.batch_sampler = batch_sampler or BatchSampler(sampler, batch_size, drop_last)

    def __iter__(self):
        for indices in self.batch_sampler:
            yield self.collate_fn([self.dataset[i] for i in indices])

    def __len__(self):
        return len(self.batch_sampler)
