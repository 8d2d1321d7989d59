"""Multi-process training under ``torchrun``: launch detection, the process group, rank helpers.

``torchrun`` starts one process per rank and tells each, through the environment, who it is
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and where to meet (``MASTER_ADDR``, ``MASTER_PORT``).
:func:`launch_from_env` reads that; with ``WORLD_SIZE`` unset or 1 it answers ``None`` and the
engine runs exactly as a single process (no process group at all).

:func:`process_group` opens ``torch.distributed`` for the job: NCCL when the training device is
CUDA (each rank on ``cuda:LOCAL_RANK``), gloo on the CPU. While it is open, :func:`current` returns
the :class:`ProcessGroup` with the collective helpers training uses: gradient averaging hooked
into optimisers, a barrier, broadcasts from rank 0, a cross-rank stop vote and a replica check.
Outside it, :func:`current` is :data:`SINGLE`, whose helpers do nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from RRLMedSAMLib.errors import InputError
from RRLMedSAMLib.io.atomic import write_json_atomic

T = TypeVar("T")

#: How long a collective may wait (seconds) before the job fails; the longest wait is the other ranks
#: waiting for rank 0's data preparation. ``RRLMEDSAM_DISTRIBUTED_TIMEOUT_S`` overrides it.
DEFAULT_TIMEOUT_S = 6 * 3600
TIMEOUT_ENV = "RRLMEDSAM_DISTRIBUTED_TIMEOUT_S"
#: Where rank 0 records the job (torchrun run id, world size, backend) in the run folder.
LAUNCH_RECORD = Path("cache") / "launch.json"


@dataclass(frozen=True)
class Launch:
    """What ``torchrun`` told this process.

    Attributes:
        rank: global rank ``0 .. world_size - 1``; rank 0 leads.
        world_size: number of processes in the job (> 1).
        local_rank: rank on this node (the CUDA device index under NCCL).
        restart_count: torchrun's ``TORCHELASTIC_RESTART_COUNT`` (> 0 after an elastic restart).
        job_id: torchrun's ``TORCHELASTIC_RUN_ID`` (the rendezvous id), ``""`` when unset.
    """

    rank: int
    world_size: int
    local_rank: int
    restart_count: int = 0
    job_id: str = ""


#: What to do about a torchrun environment that does not add up.
_TORCHRUN_HINT = "start the processes with torchrun, or unset WORLD_SIZE for one process."


def _int_env(environ: Mapping[str, str], name: str) -> int:
    value = environ.get(name)
    if value is None:
        raise InputError(f"WORLD_SIZE is set but {name} is not: {_TORCHRUN_HINT}")
    try:
        return int(value)
    except ValueError:
        raise InputError(f"{name}={value!r} is not an integer: {_TORCHRUN_HINT}") from None


def launch_from_env(environ: Mapping[str, str] | None = None) -> Launch | None:
    """The torchrun launch of this process, or ``None`` for a single process (``WORLD_SIZE`` unset or 1)."""
    environ = os.environ if environ is None else environ
    if environ.get("WORLD_SIZE") is None:
        return None
    world_size = _int_env(environ, "WORLD_SIZE")
    if world_size == 1:
        return None
    rank, local_rank = _int_env(environ, "RANK"), _int_env(environ, "LOCAL_RANK")
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise InputError(f"Inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank}.")
    restart = environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return Launch(rank, world_size, local_rank, int(restart) if restart.isdigit() else 0,
                  environ.get("TORCHELASTIC_RUN_ID", ""))


def is_main_process(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process is rank 0 of its launch (always true for a single process)."""
    launch = launch_from_env(environ)
    return launch is None or launch.rank == 0


@dataclass
class ProcessGroup:
    """This process's place in a training job and the collectives training needs.

    Attributes:
        rank, world_size, local_rank: as in :class:`Launch` (0, 1, 0 for a single process).
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (single process).
        device: the rank's training device, ``None`` for a single process (it keeps its own).
        launch: the torchrun launch, ``None`` for a single process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device | None = None
    launch: Launch | None = None
    _synced: weakref.WeakSet = field(default_factory=weakref.WeakSet, repr=False)
    _setup_announced: bool = False

    @property
    def active(self) -> bool:
        """More than one process: collectives run."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run folder's checkpoints, model and card."""
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its own under a launch, else ``device``."""
        return self.device if self.active and self.device is not None else device

    def describe(self) -> dict[str, Any]:
        """``{"world_size": W, "backend": B}`` for the model card."""
        return {"world_size": self.world_size, "backend": self.backend}

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``world_size``-th item starting at ``rank``."""
        return list(items[self.rank::self.world_size])

    # --- collectives (no-ops for a single process) -------------------------------------------

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.active:
            torch.distributed.barrier()

    def broadcast_from_main(self, value: T) -> T:
        """Rank 0's ``value`` (any picklable object), on every rank."""
        if not self.active:
            return value
        box = [value if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is true on at least one rank (the same answer everywhere)."""
        if not self.active:
            return flag
        vote = torch.tensor([1.0 if flag else 0.0], device=self._collective_device())
        torch.distributed.all_reduce(vote, op=torch.distributed.ReduceOp.MAX)
        return bool(vote.item() > 0)

    def main_first(self, work: Callable[[], T]) -> T:
        """Run ``work`` on rank 0, then on the others (which then find rank 0's cached result)."""
        if self.is_main:
            result = work()
            self.barrier()
            return result
        self.barrier()
        return work()

    def average_gradients(self, parameters: Iterable[torch.Tensor]) -> None:
        """Replace every gradient by its mean over the ranks (one flat all-reduce per dtype).

        A parameter without a gradient on some ranks gets a zero gradient there when another rank
        has one; a parameter no rank has a gradient for keeps ``None`` (the optimiser skips it).
        """
        if not self.active:
            return
        unique = list({id(p): p for p in parameters if p.requires_grad}.values())
        if not unique:
            return
        device = self._collective_device()
        present = torch.tensor([0.0 if p.grad is None else 1.0 for p in unique], device=device)
        torch.distributed.all_reduce(present, op=torch.distributed.ReduceOp.MAX)
        chosen = [p for p, flag in zip(unique, present.tolist()) if flag > 0]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for parameter in chosen:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            by_dtype.setdefault(parameter.grad.dtype, []).append(parameter)
        for group in by_dtype.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            torch.distributed.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for parameter in group:
                count = parameter.grad.numel()
                parameter.grad.copy_(flat[offset:offset + count].view_as(parameter.grad))
                offset += count

    def synchronize(self, optimizer: torch.optim.Optimizer) -> None:
        """Average gradients over the ranks right before every ``optimizer.step()`` (hooked once)."""
        if not self.active or optimizer in self._synced:
            return

        def hook(opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
            self.average_gradients(p for group in opt.param_groups for p in group["params"])

        optimizer.register_step_pre_hook(hook)
        self._synced.add(optimizer)

    def check_replicas(self, modules: Mapping[str, nn.Module], stage: str) -> None:
        """Raise when the ranks' weights differ (they are the same by construction; this guards it)."""
        if not self.active:
            return
        digest = modules_digest(modules)
        reference = self.broadcast_from_main(digest)
        if self.any_rank(digest != reference):
            raise RuntimeError(f"the ranks' weights differ after stage {stage}: data-parallel training lost sync")

    # --- the setup handshake: rank 0 prepares the run folder, the others wait for it --------

    def announce_setup(self) -> None:
        """Rank 0: the run folder is ready (configuration and prepared data written)."""
        if self.active and self.is_main and not self._setup_announced:
            self._setup_announced = True
            self.broadcast_from_main(None)

    def abandon_setup(self, error: BaseException) -> None:
        """Rank 0: setup failed with ``error``; release the waiting ranks with its message (once)."""
        if self.active and self.is_main and not self._setup_announced:
            self._setup_announced = True
            self.broadcast_from_main(" ".join(str(error).split()) or type(error).__name__)

    def wait_for_setup(self) -> None:
        """Other ranks: wait for rank 0's setup; raise :class:`InputError` when it failed."""
        if self.active and not self.is_main:
            failure = self.broadcast_from_main(None)
            if failure is not None:
                raise InputError(f"rank {self.rank} stopped: rank 0 could not start the training ({failure}).")

    def record_launch(self, run_root: Path) -> None:
        """Rank 0: write ``cache/launch.json`` (job id, world size, backend) into the run folder."""
        if self.active and self.is_main and self.launch is not None:
            write_json_atomic(run_root / LAUNCH_RECORD, {"job_id": self.launch.job_id, **self.describe()})

    def restarted_in(self, run_root: Path) -> bool:
        """Whether this is torchrun's elastic restart of the job that started the run in ``run_root``."""
        if not self.active or self.launch is None or self.launch.restart_count == 0 or not self.launch.job_id:
            return False
        try:
            record = json.loads((run_root / LAUNCH_RECORD).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and record.get("job_id") == self.launch.job_id

    def _collective_device(self) -> torch.device:
        return self.device if self.backend == "nccl" and self.device is not None else torch.device("cpu")


#: The single process: rank 0 of 1, no backend; every collective is a no-op.
SINGLE = ProcessGroup()
_current: ProcessGroup = SINGLE


def current() -> ProcessGroup:
    """The open :class:`ProcessGroup` (:data:`SINGLE` outside :func:`process_group`)."""
    return _current


def modules_digest(modules: Mapping[str, nn.Module]) -> str:
    """sha256 of the modules' state dicts (names, shapes, dtypes and bytes, in order)."""
    digest = hashlib.sha256()
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensor = value.detach().to("cpu").contiguous()
            digest.update(f"{name}.{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _timeout() -> datetime.timedelta:
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise InputError(f"{TIMEOUT_ENV}={value!r} is not a number of seconds.") from None
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def process_group(device: torch.device, launch: Launch) -> Iterator[ProcessGroup]:
    """Open ``torch.distributed`` for ``launch`` on ``device``'s kind (NCCL for CUDA, gloo for the CPU).

    Yields the :class:`ProcessGroup`, also returned by :func:`current` until the block ends and the
    group is destroyed. Refuses Apple MPS and more CUDA ranks per node than visible GPUs.
    """
    global _current
    if device.type == "mps":
        raise InputError("Multi-process training runs on CUDA (NCCL) or the CPU (gloo), not on Apple MPS; "
                         "pass --device cpu or cuda.")
    if device.type == "cuda":
        if launch.local_rank >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {launch.local_rank} has no GPU: this node sees {torch.cuda.device_count()}; "
                             "start at most that many processes per node (--nproc_per_node).")
        backend, device = "nccl", torch.device("cuda", launch.local_rank)
        torch.cuda.set_device(device)
    else:
        backend, device = "gloo", torch.device("cpu")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise InputError(f"WORLD_SIZE is set but {' and '.join(missing)} not: launch multi-process training with torchrun.")
    timeout = _timeout()
    # torchrun's store outlives an elastic restart: a key prefix per attempt keeps the restarted ranks
    # from reading the addresses the previous attempt published
    store, _, _ = next(torch.distributed.rendezvous("env://", rank=launch.rank, world_size=launch.world_size,
                                                    timeout=timeout))
    store = torch.distributed.PrefixStore(f"rrlmedsam/attempt_{launch.restart_count}/", store)
    torch.distributed.init_process_group(backend, store=store, rank=launch.rank, world_size=launch.world_size,
                                         timeout=timeout)
    group = ProcessGroup(launch.rank, launch.world_size, launch.local_rank, backend, device, launch)
    _current = group
    try:
        yield group
        # every rank tears the group down together: a rank that destroyed it while another was still
        # leaving its last collective was seen to abort in the communication library's threads
        torch.distributed.barrier()
    finally:
        _current = SINGLE
        torch.distributed.destroy_process_group()
