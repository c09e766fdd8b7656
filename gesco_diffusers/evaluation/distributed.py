"""The processes of one launch (``torchrun`` / ``accelerate launch``) sharing the work of ``gesco evaluate`` and
``gesco generate``, through Accelerate's :class:`~accelerate.PartialState`.

* The state is built with ``cpu=True`` when the device is the CPU: that is what makes ``torchrun --nproc_per_node N``
  join N gloo ranks on a CPU machine (``PartialState()`` there gives N independent "rank 0 of 1" processes that would
  race on the same files). On GPUs each rank uses its own ``cuda:<local rank>``.
* Work is sharded deterministically by global index (:meth:`Processes.shard`): the global list of batches is the same
  whatever the process count, batch ``b`` goes to rank ``b mod N``. So a batch holds the same images for 1 or N
  processes and every image is the same (its seeds come from the item's global index anyway).
* Results come back with ``gather_object`` in rank order and are put back in global order by the caller; sums
  (confusion counts, float64 feature sums) are added in rank order.
* :meth:`Processes.lock` keeps a second, independently started launch out of an output folder: the main process
  holds an exclusive ``flock`` on ``<out>/.gesco.lock`` (released by the kernel if the process dies) and every rank of
  the second launch fails with a one-line error naming the folder.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, TypeVar, Union

import torch

__all__ = ["LOCK_NAME", "Processes", "SingleProcess", "launch_mismatch", "numbered_batches", "requested_world_size"]

T = TypeVar("T")
LOCK_NAME = ".gesco.lock"


def requested_world_size() -> Optional[int]:
    """How many processes the launcher started (``WORLD_SIZE``, set by torchrun and ``accelerate launch``); ``None``
    when the process was not started by a launcher."""
    value = os.environ.get("WORLD_SIZE")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def launch_mismatch(num_processes: int) -> Optional[str]:
    """Why this launch looks like it asked for more processes than joined (``num_processes``), or ``None``.

    * ``WORLD_SIZE`` (torchrun, ``accelerate launch --multi_gpu``) differs from the group's size: the processes did not
      join one group, e.g. ``PartialState()`` without ``cpu=True`` under torchrun on a CPU machine;
    * ``accelerate launch --cpu --num_processes N`` runs ONE process (its simple launcher exports ``MASTER_ADDR`` for
      an MPI launch but starts a single process): ``MASTER_ADDR`` set, no world size from any launcher, 1 process.
    """
    launched = requested_world_size()
    if launched is not None and launched != num_processes:
        return (f"the launcher started {launched} processes but they did not join one group (this one sees "
                f"{num_processes}); on the CPU launch with torchrun --nproc_per_node N")
    mpi = any(os.environ.get(k) for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"))
    if launched is None and not mpi and num_processes == 1 and os.environ.get("MASTER_ADDR"):
        return ("this launch seems to ask for several processes (MASTER_ADDR is set) but runs 1: accelerate launch "
                "--cpu --num_processes N starts a single process; on the CPU use torchrun --nproc_per_node N")
    return None


class Processes:
    """This process's place in the launch, and the few collective steps the commands need.

    Args:
        device: the requested device (``None``: CUDA if available, else the CPU); under a multi-GPU launch each
            rank gets ``cuda:<local rank>``.
    """

    def __init__(self, device: Union[str, torch.device, None] = None):
        from accelerate import PartialState

        requested = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.state = PartialState(cpu=requested.type == "cpu")
        self.num_processes = int(self.state.num_processes)
        self.process_index = int(self.state.process_index)
        self.is_main = bool(self.state.is_main_process)
        launched = requested_world_size()
        if launched is not None and launched != self.num_processes:
            raise RuntimeError(f"{launch_mismatch(self.num_processes)} and --device cpu")
        problem = launch_mismatch(self.num_processes)
        if problem is not None:
            import warnings

            warnings.warn(problem, RuntimeWarning, stacklevel=2)
        if requested.type != "cpu" and self.num_processes > 1 and requested.index is None:
            requested = self.state.device  # cuda:<local rank>
        self.device = requested

    # -- sharding ---------------------------------------------------------------------------------------------------

    def shard(self, work: Sequence[T]) -> list[T]:
        """This rank's part of ``work`` (a list every rank builds the same): elements ``rank, rank + N, ...``."""
        return list(work[self.process_index :: self.num_processes])

    # -- collectives ------------------------------------------------------------------------------------------------

    def wait(self) -> None:
        self.state.wait_for_everyone()

    def gather(self, objects: list) -> list:
        """Every rank's ``objects`` concatenated in rank order, on every rank (``gather_object``)."""
        if self.num_processes == 1:
            return list(objects)
        from accelerate.utils import gather_object

        return list(gather_object(list(objects)))

    def broadcast(self, value: Any) -> Any:
        """The main process's ``value`` on every rank."""
        if self.num_processes == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value if self.is_main else None])[0]

    def check(self, error: Optional[BaseException]) -> None:
        """Raise on every rank if the main process met ``error`` (checks made once, failing everywhere alike)."""
        shared = self.broadcast(None if error is None else (type(error).__name__, str(error)))
        if shared is None:
            return
        kind, message = shared
        if self.is_main and error is not None:
            raise error
        cls = {"FileExistsError": FileExistsError, "FileNotFoundError": FileNotFoundError,
               "RuntimeError": RuntimeError}.get(kind, ValueError)
        raise cls(message)

    # -- one launch per output folder ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, folder: Union[str, os.PathLike], command: str) -> Iterator[None]:
        """Hold ``folder``'s lock for the block (main process), or fail on every rank if another launch holds it."""
        import fcntl

        handle, error = None, None
        path = Path(folder) / LOCK_NAME
        if self.is_main:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = open(path, "a+")
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                handle.seek(0)
                handle.truncate()
                handle.write(f"{socket.gethostname()} pid {os.getpid()} ({self.num_processes} processes)\n")
                handle.flush()
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                handle = None
                error = FileExistsError(
                    f"another gesco {command} is writing to {folder} ({holder}); wait for it to finish or choose "
                    "another output folder"
                )
            except OSError as err:
                error = err
        self.check(error)
        try:
            yield
        finally:
            if handle is not None:
                with contextlib.suppress(OSError):
                    path.unlink()  # a finished run leaves no lock file (a killed one leaves an unlocked one)
                handle.close()


class SingleProcess:
    """A stand-in for :class:`Processes` when a caller works without a launch (one process, no Accelerate state)."""

    num_processes, process_index, is_main = 1, 0, True

    def shard(self, work):
        return list(work)

    def gather(self, objects):
        return list(objects)

    def broadcast(self, value):
        return value

    def check(self, error):
        if error is not None:
            raise error

    def wait(self):
        pass


def numbered_batches(indices: Sequence[int], batch_size: int) -> list[tuple[int, list[int]]]:
    """``indices`` cut into numbered batches: the same batches whatever the number of processes."""
    indices = list(indices)
    return list(enumerate(indices[start : start + batch_size] for start in range(0, len(indices), batch_size)))
