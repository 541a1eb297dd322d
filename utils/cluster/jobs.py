"""Small jobs that every rank of a cluster runs: the communication patterns of notebook 00, and faults.

Each job is a module-level function, so rank processes can import it by name, and assumes only an
initialised default process group. The same function therefore runs on `utils.cluster.cluster.SimulatedCluster`
(gloo on CPU processes) and under torchrun (`python -m utils.launch`, gloo or nccl on real GPUs):

    cluster.run(ring_demo)                                             # in a notebook
    torchrun --nproc-per-node 4 -m utils.launch utils.cluster.jobs:ring_demo --backend nccl   # on GPUs

Next to each job sits the pure function that predicts its result (`ring_prev`, `all_to_all_expected`,
`all_reduce_reference`), which the tests and the notebook's exercises use as the reference.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from utils import inputs as arg

REDUCE_OPS = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}


def rank_device() -> torch.device:
    """Where this rank keeps tensors it communicates: its GPU under nccl, the CPU under gloo."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------- who am I

def whoami() -> tuple[int, int]:
    """Print and return (rank, world_size): every rank runs the same code and learns who it is."""
    rank, world_size = dist.get_rank(), dist.get_world_size()
    print(f"I am rank {rank} of {world_size}")
    return rank, world_size


def echo(*args, **kwargs) -> tuple:
    """Return (rank, args, kwargs): shows that arguments reach every rank (pickled) and come back."""
    return dist.get_rank(), args, kwargs


# --------------------------------------------------------------------------------------- point to point

def ring_next(rank: int, world_size: int) -> int:
    """The rank that `rank` sends to in a ring: the next one, wrapping from the last back to 0."""
    rank, world_size = _rank_of(rank, world_size, "ring_next")
    return (rank + 1) % world_size


def ring_prev(rank: int, world_size: int) -> int:
    """The rank that `rank` receives from in a ring: the previous one, wrapping from 0 to the last."""
    rank, world_size = _rank_of(rank, world_size, "ring_prev")
    return (rank - 1) % world_size


def _rank_of(rank, world_size, where: str) -> tuple[int, int]:
    world_size = arg.whole(world_size, "world_size", low=1, where=where, why="a ring has at least one rank")
    return arg.whole(rank, "rank", low=0, high=world_size - 1, where=where), world_size


def ring_demo() -> int:
    """Each rank sends its rank number to the next rank and receives from the previous; return what arrived.

    The send and the receive are posted together (isend/irecv), so no rank waits for another to finish
    first: with blocking sends every rank would sit in `send` waiting for a `recv` nobody has posted yet.
    This is the neighbour exchange of pipeline parallelism (stage r hands activations to stage r + 1).
    """
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if world_size == 1:
        print("alone in the ring: kept my own number 0")
        return rank
    send = torch.tensor([rank], device=rank_device())
    recv = torch.zeros(1, dtype=send.dtype, device=rank_device())
    ops = [dist.P2POp(dist.isend, send, ring_next(rank, world_size)),
           dist.P2POp(dist.irecv, recv, ring_prev(rank, world_size))]
    for request in dist.batch_isend_irecv(ops):
        request.wait()
    got = int(recv.item())
    print(f"sent {rank} to rank {ring_next(rank, world_size)}, received {got} from rank "
          f"{ring_prev(rank, world_size)}")
    return got


# ------------------------------------------------------------------------------------------ collectives

def all_to_all_expected(rank: int, world_size: int) -> list[int]:
    """What `all_to_all_demo` returns on `rank`: chunk `rank` of every rank j, i.e. 10 * j + rank."""
    rank, world_size = _rank_of(rank, world_size, "all_to_all_expected")
    return [10 * source + rank for source in range(world_size)]


def all_to_all_demo() -> list[int]:
    """Rank r sends the number 10 * r + j to each rank j and returns the numbers it received, by sender.

    This is the dispatch step of expert parallelism (DeepSeek-V3 report, section 3.2.2): every rank has
    tokens for every other rank's experts, and one all-to-all delivers them all at once.
    """
    rank, world_size = dist.get_rank(), dist.get_world_size()
    outgoing = [torch.tensor([10 * rank + dest], device=rank_device()) for dest in range(world_size)]
    incoming = [torch.zeros(1, dtype=torch.long, device=rank_device()) for _ in range(world_size)]
    dist.all_to_all(incoming, outgoing)
    got = [int(t.item()) for t in incoming]
    print(f"sent {[int(t.item()) for t in outgoing]}, received {got}")
    return got


def all_reduce_reference(values: list[float], op: str = "sum") -> list[float]:
    """What every rank holds after an all-reduce of `values` (one number per rank) with `op`."""
    if not isinstance(op, str) or op not in REDUCE_OPS:
        raise ValueError(f"op must be one of {', '.join(REDUCE_OPS)}; got {op!r}")
    values = arg.sequence(values, "values", where="all_reduce_reference", nonempty=False)
    if not values:
        raise arg.InputError("values needs one number per rank, so at least one")
    values = [arg.real(v, "every value", where="all_reduce_reference") for v in values]
    total = {"sum": sum, "max": max, "min": min}[op](values)
    return [total] * len(values)


def all_reduce_demo(values: list[float] | None = None, op: str = "sum") -> float:
    """Rank r contributes `values[r]` (default r + 1); every rank returns the reduced number.

    This is how data-parallel ranks agree on one gradient: each holds its own, and after the all-reduce all
    hold the same sum.
    """
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if not isinstance(op, str) or op not in REDUCE_OPS:
        raise ValueError(f"op must be one of {', '.join(REDUCE_OPS)}; got {op!r}")
    if values is not None and len(arg.sequence(values, "values", where="all_reduce_demo")) != world_size:
        raise arg.InputError(f"values needs one number per rank ({world_size}); got {len(values)}")
    if values is not None:
        values = [arg.real(v, "every value", where="all_reduce_demo") for v in values]
    mine = float(rank + 1) if values is None else float(values[rank])
    tensor = torch.tensor([mine], dtype=torch.float64, device=rank_device())
    dist.all_reduce(tensor, op=REDUCE_OPS[op])
    result = float(tensor.item())
    print(f"contributed {mine:g}, all-reduce ({op}) gave {result:g}")
    return result


def ring_all_reduce_bytes_sent(num_bytes: int, world_size: int) -> float:
    """Bytes each rank sends in a ring all-reduce of a `num_bytes` tensor: 2 (n - 1) / n times its size.

    The ring splits the tensor into n chunks; a reduce-scatter pass and an all-gather pass each forward
    n - 1 chunks. Dividing by a link bandwidth turns it into the time a real GPU link would need.
    """
    world_size = arg.whole(world_size, "world_size", low=1, where="ring_all_reduce_bytes_sent")
    num_bytes = arg.real(num_bytes, "num_bytes", low=0, where="ring_all_reduce_bytes_sent", why="a size")
    return 2 * (world_size - 1) / world_size * num_bytes


# --------------------------------------------------------------------------------------------- timing

def timed_all_reduce(numel: int = 1 << 20, repeats: int = 5) -> float:
    """Median wall-clock seconds this rank spends in an all-reduce of `numel` float32 numbers."""
    numel = arg.whole(numel, "numel", low=1, high=arg.MAX_ELEMENTS, where="timed_all_reduce")
    repeats = arg.whole(repeats, "repeats", low=1, high=1000, where="timed_all_reduce")
    tensor = torch.ones(numel, dtype=torch.float32, device=rank_device())
    dist.barrier()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dist.all_reduce(tensor)
        if tensor.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed_matmul(n: int = 256, repeats: int = 5) -> float:
    """Median wall-clock seconds for one n x n float32 matmul on this rank (all ranks start together).

    One untimed multiply first warms up (allocator, kernels, thread pool), so the first timing is not a
    start-up cost. Each simulated rank runs torch on one thread; time the notebook's own process with
    `torch.set_num_threads(1)` too, or the comparison measures threads, not ranks.
    """
    n = arg.whole(n, "n", low=1, high=4096, where="timed_matmul", why="an n x n matmul, seconds at most")
    repeats = arg.whole(repeats, "repeats", low=1, high=1000, where="timed_matmul")
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(rank_device())
    b = torch.randn(n, n, generator=generator).to(rank_device())
    a @ b                                    # warm-up, not timed
    if a.is_cuda:
        torch.cuda.synchronize()
    if dist.is_initialized():
        dist.barrier()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        if a.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------- faults

def print_lines(lines: int = 2) -> int:
    """Print `lines` numbered lines to stdout and one to stderr; return the rank (tests output capture)."""
    rank = dist.get_rank()
    for i in range(lines):
        print(f"line {i} from rank {rank}")
    print(f"a warning from rank {rank}", file=sys.stderr)
    return rank


def fail_on_rank(bad_rank: int) -> float:
    """Every rank heads into an all-reduce, but `bad_rank` raises first, so the others wait for it forever.

    Shows what a bug on one GPU looks like from the outside: the cluster reports the failing rank and its
    traceback instead of hanging with the ranks that are stuck in the collective.
    """
    rank = dist.get_rank()
    if rank == bad_rank:
        raise RuntimeError(f"simulated fault on rank {rank}")
    tensor = torch.ones(1, device=rank_device())
    dist.all_reduce(tensor)  # waits for bad_rank, which never arrives
    return float(tensor.item())


def hang_on_rank(bad_rank: int, seconds: float = 3600.0) -> int:
    """`bad_rank` sleeps for `seconds` (a hang); the other ranks return their rank at once."""
    rank = dist.get_rank()
    if rank == bad_rank:
        time.sleep(seconds)
    return rank


def stall_on_rank(bad_rank: int, seconds: float = 3600.0) -> int:
    """`bad_rank` sleeps for `seconds` before a barrier that every rank enters: one stuck rank, the others
    waiting for it. A timeout then says which rank is where (the stuck one in this function, the others in
    the barrier)."""
    rank = dist.get_rank()
    if rank == bad_rank:
        time.sleep(seconds)
    dist.barrier()
    return rank


def exit_on_rank(bad_rank: int, code: int = 3) -> int:
    """`bad_rank` prints two lines and ends its process with `os._exit(code)` (no clean-up, no goodbye);
    the others wait in a barrier. What it printed still reaches the error."""
    rank = dist.get_rank()
    if rank == bad_rank:
        print(f"rank {rank} is about to exit")
        print(f"rank {rank} exits with code {code}", file=sys.stderr)
        os._exit(code)
    dist.barrier()
    return rank


def start_child(seconds: float = 600.0) -> int:
    """Start a child process that sleeps for `seconds` and return its pid, leaving it running: it must end
    with its rank (at `close()` or after a fault), not outlive it."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({float(seconds)!r})"]).pid


def kill_rank(bad_rank: int) -> int:
    """`bad_rank` kills its own process with SIGKILL (a crashed GPU); the others wait in a barrier."""
    rank = dist.get_rank()
    if rank == bad_rank:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()
    return rank


def kill_factory(bad_rank: int) -> int:
    """`bad_rank` kills its parent, the rank factory of a simulated cluster, with SIGKILL and waits; the
    others wait in a barrier. Every rank ends with the factory, and the job's error must say so. It refuses
    to run anywhere else (under torchrun a rank's parent is the launcher's agent; by hand, a shell)."""
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        parent = ""
    if "_factory_main" not in parent:
        raise RuntimeError("kill_factory runs only on a simulated cluster, whose ranks a rank factory started; "
                           "this rank's parent is another process, which it will not kill")
    rank = dist.get_rank()
    if rank == bad_rank:
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(3600.0)  # a bound far beyond the watchdog's half second: the rank ends with its factory
    dist.barrier()
    return rank
