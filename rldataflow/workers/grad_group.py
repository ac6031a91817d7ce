"""Gradient groups: rollout workers that average their gradients among themselves.

A group is ``world_size`` workers, each with a ``rank``; :meth:`GradientGroup.allreduce_mean`
replaces every member's tensors by their mean over the group, so members that start from the
same weights and apply the same optimizer step stay identical without any weight broadcast
(decentralized data-parallel training, as in DD-PPO). Two kinds, chosen by the runtime:

* :class:`GlooGroup` -- ``torch.distributed``'s gloo backend over TCP, one member per process
  (process and Ray runtimes). The process group is an object (``ProcessGroupGloo`` on a
  ``TCPStore``), not torch's global default group, so a worker can leave and re-join a new
  group (new address, new world size) after a member died.
* :class:`ThreadGroup` -- members are objects of one process stepping on threads (the inline
  runtime): the mean is taken in rank order under a barrier; same math, bit-reproducible.

A :class:`GroupSpec` (picklable) says which group to join; ``spec.join(rank)`` makes the member.

Example (two worker processes, each runs)::

    group = GroupSpec("gloo", addr="127.0.0.1", port=29533, world_size=2, tag="g0").join(rank)
    loss.backward()
    group.allreduce_mean([p.grad for p in model.parameters()])
    optimizer.step()       # the same step on every member
    group.close()
"""

from __future__ import annotations

import datetime
import socket
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = ["GlooGroup", "GradientGroup", "GroupSpec", "ThreadGroup", "abort_thread_group",
           "free_port", "node_ip"]


class GradientGroup(Protocol):
    rank: int
    world_size: int
    #: seconds spent in allreduce_mean so far (waiting for the peers included)
    allreduce_s: float

    def allreduce_mean(self, tensors: list[torch.Tensor]) -> None: ...
    def broadcast(self, tensors: list[torch.Tensor], src: int = 0) -> None: ...
    def close(self) -> None: ...


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    # One collective per call, not one per parameter: a gloo round trip costs ~1 ms.
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def _unflat(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n


class GlooGroup:
    """A member of a gloo process group rendezvousing on a ``TCPStore`` at ``addr:port``
    (rank 0 hosts the store). Construction blocks until all ``world_size`` members joined."""

    def __init__(self, addr: str, port: int, rank: int, world_size: int, tag: str = "g",
                 timeout_s: float = 60.0) -> None:
        import torch.distributed as dist  # only processes that train in a group pay for it

        if not dist.is_available() or not dist.is_gloo_available():
            raise RuntimeError("this torch build has no torch.distributed gloo backend")
        timeout = datetime.timedelta(seconds=timeout_s)
        self.rank, self.world_size = int(rank), int(world_size)
        self.allreduce_s = 0.0
        self._store = dist.TCPStore(addr, int(port), self.world_size, self.rank == 0,
                                    timeout=timeout)
        opts = dist.ProcessGroupGloo._Options()
        opts._timeout = timeout
        host = "127.0.0.1" if addr in ("127.0.0.1", "localhost") else node_ip()
        opts._devices = [dist.ProcessGroupGloo.create_device(hostname=host)]
        self._pg = dist.ProcessGroupGloo(dist.PrefixStore(tag + "/", self._store), self.rank,
                                         self.world_size, opts)

    def allreduce_mean(self, tensors: list[torch.Tensor]) -> None:
        if self.world_size == 1 or not tensors:
            return
        start = time.perf_counter()
        flat = _flat(tensors)
        self._pg.allreduce([flat]).wait()  # a sum; ring allreduce: identical on every member
        flat /= self.world_size
        _unflat(flat, tensors)
        self.allreduce_s += time.perf_counter() - start

    def broadcast(self, tensors: list[torch.Tensor], src: int = 0) -> None:
        if self.world_size == 1 or not tensors:
            return
        import torch.distributed as dist

        flat = _flat(tensors).clone()
        opts = dist.BroadcastOptions()
        opts.rootRank = src
        self._pg.broadcast([flat], opts).wait()
        _unflat(flat, tensors)

    def close(self) -> None:
        self._pg = None
        self._store = None


class _ThreadRendezvous:
    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size)
        self.slots: list[torch.Tensor | None] = [None] * world_size


_THREAD_GROUPS: dict[str, _ThreadRendezvous] = {}
_THREAD_GROUPS_LOCK = threading.Lock()


class ThreadGroup:
    """A member of an in-process group whose members run on threads of one process."""

    def __init__(self, rank: int, world_size: int, tag: str = "g",
                 timeout_s: float = 60.0) -> None:
        self.rank, self.world_size = int(rank), int(world_size)
        self.allreduce_s = 0.0
        self.timeout_s = timeout_s
        with _THREAD_GROUPS_LOCK:
            self._rv = _THREAD_GROUPS.setdefault(tag, _ThreadRendezvous(self.world_size))
        if self._rv.world_size != self.world_size:
            raise ValueError(f"thread group {tag!r} has world size {self._rv.world_size}, "
                             f"not {self.world_size}")
        self.tag = tag

    def _exchange(self, flat: torch.Tensor) -> list[torch.Tensor]:
        rv = self._rv
        rv.slots[self.rank] = flat
        rv.barrier.wait(self.timeout_s)
        parts = list(rv.slots)  # every member reads all slots before any writes again
        rv.barrier.wait(self.timeout_s)
        return parts  # type: ignore[return-value]

    def allreduce_mean(self, tensors: list[torch.Tensor]) -> None:
        if self.world_size == 1 or not tensors:
            return
        start = time.perf_counter()
        parts = self._exchange(_flat(tensors))
        total = parts[0].clone()
        for part in parts[1:]:  # rank order: the same float sum on every member, every run
            total += part
        _unflat(total / self.world_size, tensors)
        self.allreduce_s += time.perf_counter() - start

    def broadcast(self, tensors: list[torch.Tensor], src: int = 0) -> None:
        if self.world_size == 1 or not tensors:
            return
        _unflat(self._exchange(_flat(tensors))[src], tensors)

    def close(self) -> None:
        with _THREAD_GROUPS_LOCK:
            if _THREAD_GROUPS.get(self.tag) is self._rv:
                del _THREAD_GROUPS[self.tag]


def abort_thread_group(tag: str) -> None:
    """Wake the members of thread group ``tag`` waiting for a peer that failed (they raise
    ``threading.BrokenBarrierError``) instead of letting them wait out the timeout."""
    with _THREAD_GROUPS_LOCK:
        rv = _THREAD_GROUPS.pop(tag, None)
    if rv is not None:
        rv.barrier.abort()


@dataclass(frozen=True)
class GroupSpec:
    """Which group to join: ``kind`` "gloo" (``addr:port``) or "thread"; ``tag`` names this
    formation (a re-formed group gets a new one)."""

    kind: str
    world_size: int
    tag: str
    addr: str = "127.0.0.1"
    port: int = 0
    timeout_s: float = 60.0

    def join(self, rank: int) -> GradientGroup:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank {rank} is outside a group of {self.world_size}")
        if self.kind == "gloo":
            return GlooGroup(self.addr, self.port, rank, self.world_size, self.tag,
                             self.timeout_s)
        if self.kind == "thread":
            return ThreadGroup(rank, self.world_size, self.tag, self.timeout_s)
        raise ValueError(f"unknown gradient group kind {self.kind!r} (gloo or thread)")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def node_ip() -> str:
    """This machine's address as other nodes see it (the interface of the default route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP: no packet is sent
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"
