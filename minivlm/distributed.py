"""Data parallelism past one machine: processes started by `mpiexec`, each with its shard of every
global batch, talking over MPI (NumPy arrays) or NCCL (CuPy arrays), never a home-made transport.

    mpiexec -n 4 python -m minivlm train-clip          # 4 ranks share each batch of 128

    world_size(), rank()         from the launcher: 1 and 0 for a process mpiexec did not start
    all_reduce(array)            the element-wise sum over the ranks, a new array
    broadcast(array, root=0)     rank root's values, written into `array` on every rank
    all_gather(x)                the ranks' tensors (n, ...) stacked in rank order (N·n, ...);
                                 its backward sums the gradient over the ranks and keeps this
                                 rank's rows (every rank's loss depends on every rank's rows)
    shard(*arrays)               this rank's n/N rows of each global batch (n, ...)
    average_gradients(params)    .grad averaged over the ranks, bucket by bucket
    average(value)               a number's mean over the ranks (a loss, to print it)

The transport follows the arrays, as every op does: NumPy arrays go over MPI (mpi4py and an MPI
library from PyPI: pip install "minivlm[distributed]"), CuPy arrays over NCCL (cupy.cuda.nccl:
pip install "minivlm[cuda]"), whose communicator MPI sets up. With MINIVLM_BACKEND=cupy each rank
takes the GPU of its rank among the ranks of its machine. Every rank must call the collectives in
the same order with arrays of the same shapes. Like backend.py this module knows libraries the
rest of minivlm does not: it imports mpi4py and CuPy itself (when launched), and NumPy through
minivlm.backend.
"""
import functools
import os

from . import backend
from .autograd import Function
from .backend import xp_of

# The environment variables in which launchers give the number of processes they started:
# MPICH's and Intel MPI's hydra, Open MPI, MVAPICH.
LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
INSTALL_MPI = 'pip install "minivlm[distributed]" (mpi4py and the mpich wheel)'
INSTALL_NCCL = 'pip install "minivlm[cuda]" (cupy-cuda12x and nvidia-nccl-cu12)'
BUCKET_BYTES = 25 * 2 ** 20   # gradients per all-reduce: PyTorch DDP's bucket_cap_mb=25


def launched_size():
    """The number of processes the launcher started: 1 when mpiexec did not start this one."""
    for name in LAUNCHER_SIZE:
        if name in os.environ:
            return int(os.environ[name])
    return 1


@functools.cache
def _world():
    """MPI's COMM_WORLD, started on first use; None for a single process (MPI is not needed)."""
    size = launched_size()
    if size == 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise RuntimeError(f"this process is one of {size} started by mpiexec, but mpi4py "
                           f"cannot be imported ({error}): {INSTALL_MPI}") from error
    world = MPI.COMM_WORLD
    if world.size != size:
        library = " ".join(MPI.Get_library_version().splitlines()[0].split())
        raise RuntimeError(f"mpiexec started {size} processes but MPI sees {world.size}: that "
                           f"mpiexec belongs to another MPI library than mpi4py's ({library}); "
                           f"launch with the mpiexec installed beside mpi4py")
    if backend.default_name() == "cupy":
        _use_local_gpu(world.Split_type(MPI.COMM_TYPE_SHARED).rank)
    return world


def _use_local_gpu(local_rank):
    """Make the GPU of this rank's place among its machine's ranks the current device, before
    CuPy allocates anything (so that no rank also holds memory on GPU 0)."""
    try:
        import cupy
        cupy.cuda.Device(local_rank % cupy.cuda.runtime.getDeviceCount()).use()
    except Exception:
        backend.module("cupy")   # backend's error: what CuPy needs to run here
        raise


def world_size():
    """The number of ranks (processes) of the job: 1 when mpiexec did not start this process."""
    world = _world()
    return 1 if world is None else world.size


def rank():
    """This process's rank, 0 ... world_size() - 1."""
    world = _world()
    return 0 if world is None else world.rank


def is_initialized():
    """torch.distributed's question: True when this process is one of several ranks."""
    return world_size() > 1


get_world_size, get_rank = world_size, rank   # torch.distributed's names


def is_main():
    """True on rank 0: the rank that prints, draws and writes files."""
    return rank() == 0


def abort(status):
    """End every rank of the job with exit status `status` (after an error on this rank, so that
    the others do not wait for it forever); nothing on a single process, or where MPI itself
    could not start."""
    try:
        world = _world()
    except RuntimeError:
        return
    if world is not None:
        world.Abort(status)


# --- the transports ---------------------------------------------------------------------------

class _MPI:
    """Collectives on contiguous NumPy arrays over MPI."""

    def __init__(self, world):
        from mpi4py import MPI
        self.world, self.in_place = world, MPI.IN_PLACE

    def all_reduce(self, buffer):
        self.world.Allreduce(self.in_place, buffer)

    def broadcast(self, buffer, root):
        self.world.Bcast(buffer, root=root)

    def all_gather(self, send, receive):
        self.world.Allgather(send, receive)

    def reduce_scatter(self, send, receive):
        self.world.Reduce_scatter_block(send, receive)


class _NCCL:
    """Collectives on contiguous CuPy arrays over NCCL, on the current stream; MPI hands NCCL's
    unique id from rank 0 to the others."""

    def __init__(self, world):
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as error:
            raise RuntimeError(f"CuPy arrays go over NCCL, but cupy.cuda.nccl cannot be "
                               f"imported ({error}): {INSTALL_NCCL}") from error
        self.cupy, self.nccl = cupy, nccl
        unique_id = world.bcast(nccl.get_unique_id() if world.rank == 0 else None, root=0)
        self.communicator = nccl.NcclCommunicator(world.size, unique_id, world.rank)
        self.types = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
                      "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32,
                      "int64": nccl.NCCL_INT64, "uint8": nccl.NCCL_UINT8}

    def _type(self, array):
        if array.dtype.name not in self.types:
            raise TypeError(f"NCCL does not carry {array.dtype} arrays; it carries "
                            f"{', '.join(self.types)}")
        return self.types[array.dtype.name]

    def _stream(self):
        return self.cupy.cuda.get_current_stream().ptr

    def all_reduce(self, buffer):
        self.communicator.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size,
                                    self._type(buffer), self.nccl.NCCL_SUM, self._stream())

    def broadcast(self, buffer, root):
        self.communicator.bcast(buffer.data.ptr, buffer.size, self._type(buffer), root,
                                self._stream())

    def all_gather(self, send, receive):
        self.communicator.allGather(send.data.ptr, receive.data.ptr, send.size,
                                    self._type(send), self._stream())

    def reduce_scatter(self, send, receive):
        self.communicator.reduceScatter(send.data.ptr, receive.data.ptr, receive.size,
                                        self._type(send), self.nccl.NCCL_SUM, self._stream())


@functools.cache
def _transport(kind):
    return _NCCL(_world()) if kind == "cupy" else _MPI(_world())


# --- collectives --------------------------------------------------------------------------------

def all_reduce(array):
    """The element-wise sum of `array` over the ranks: a new array of its shape and dtype (a copy
    on a single process)."""
    total = xp_of(array).array(array, order="C")     # a copy, summed in place
    if world_size() > 1:
        _transport(backend.name_of(total)).all_reduce(total)
    return total


def broadcast(array, root=0):
    """Write rank `root`'s values of `array` into `array` on every rank; returns `array`."""
    if world_size() > 1:
        contiguous = array.flags.c_contiguous
        buffer = array if contiguous else xp_of(array).ascontiguousarray(array)
        _transport(backend.name_of(buffer)).broadcast(buffer, root)
        if not contiguous:
            array[...] = buffer
    return array


def _gathered(array):
    """The ranks' arrays (n, ...) stacked along axis 0 in rank order: (world_size·n, ...)."""
    send = xp_of(array).ascontiguousarray(array)
    receive = xp_of(send).empty((world_size(), *send.shape), dtype=send.dtype)
    _transport(backend.name_of(send)).all_gather(send, receive)
    return receive.reshape(-1, *send.shape[1:])


class AllGather(Function):
    """all_gather's op: (n, ...) -> (N·n, ...); backward: this rank's n rows of the gradient
    summed over the ranks (a reduce-scatter: half the bytes of an all-reduce)."""

    def forward(self, x):
        self.rows = x.shape[0]
        return _gathered(x)

    def backward(self, grad):
        xp = xp_of(grad)
        grad = xp.ascontiguousarray(grad)
        rows = xp.empty((self.rows, *grad.shape[1:]), dtype=grad.dtype)
        _transport(backend.name_of(grad)).reduce_scatter(grad, rows)
        return rows


def all_gather(x):
    """The ranks' Tensors x (n, ...), the same shape on every rank, stacked along dim 0 in rank
    order -> (world_size·n, ...); x itself on a single process. Differentiable: every rank must
    call backward through it (the gradients are summed over the ranks)."""
    return x if world_size() == 1 else AllGather.apply(x)


# --- data parallelism ----------------------------------------------------------------------------

def shard(*arrays):
    """This rank's rows of each global batch array (n, ...): rows rank·n/N ... (rank+1)·n/N − 1.
    One array for one given, else a tuple."""
    size, index = world_size(), rank()
    shards = []
    for array in arrays:
        if len(array) % size:
            raise ValueError(f"a global batch of {len(array)} does not split evenly over "
                             f"{size} ranks: choose a batch size that is a multiple of {size}")
        rows = len(array) // size
        shards.append(array[index * rows:(index + 1) * rows])
    return shards[0] if len(shards) == 1 else tuple(shards)


def broadcast_parameters(params, root=0):
    """Every parameter's values from rank `root` (one broadcast each: done once, at the start)."""
    for param in params:
        broadcast(param.array, root)


def buckets(tensors, bucket_bytes=BUCKET_BYTES):
    """Consecutive runs of `tensors` of one backend and dtype, each of at most bucket_bytes (or
    one larger tensor): the groups that average_gradients flattens into one all-reduce."""
    groups, total, kind = [], 0, None
    for tensor in tensors:
        if not groups or (tensor.device, tensor.dtype) != kind \
                or total + tensor.array.nbytes > bucket_bytes:
            groups.append([])
            total, kind = 0, (tensor.device, tensor.dtype)
        groups[-1].append(tensor)
        total += tensor.array.nbytes
    return groups


def average_gradients(params, bucket_bytes=BUCKET_BYTES):
    """Replace each parameter's .grad by its mean over the ranks: the gradients of a bucket (see
    `buckets`) are flattened into one array and summed by one all-reduce, since each call pays
    the network's latency once; each .grad then views its part of the bucket. Nothing on a
    single process."""
    size = world_size()
    if size == 1:
        return
    for bucket in buckets([p.grad for p in params if p.grad is not None], bucket_bytes):
        total = xp_of(bucket[0].array).concatenate([grad.array.ravel() for grad in bucket])
        _transport(backend.name_of(total)).all_reduce(total)
        total /= size
        start = 0
        for grad in bucket:
            grad.array = total[start:start + grad.numel()].reshape(grad.shape)
            start += grad.numel()


def average(value):
    """The mean over the ranks of a number (a loss); the number itself on a single process."""
    if world_size() == 1:
        return value
    return all_reduce(backend.numpy.asarray(value, dtype="float64")).item() / world_size()
