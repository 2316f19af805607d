"""Placement of twins on hosts by rendezvous (highest random weight) hashing.

Each (host, twin) pair gets a pseudo-random weight; a twin lives on the host with the highest
weight. Adding or removing a host therefore moves only the twins that host wins or held. Pure
functions of the host set: no Ray, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Placement", "key_hash"]

_MASK = (1 << 64) - 1


def key_hash(key: str) -> int:
    """A stable 64-bit hash of ``key`` (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


def _mix(x: int) -> int:
    # splitmix64 finaliser: spreads the combined key and host hashes into a uniform weight
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


@dataclass(frozen=True, slots=True)
class Placement:
    """Which host owns which twin, for one set of live hosts."""

    hosts: tuple[str, ...]
    _seeds: tuple[tuple[int, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ValueError("a placement needs at least one host")
        if len(set(self.hosts)) != len(self.hosts):
            raise ValueError("host names must be unique")
        object.__setattr__(self, "_seeds", tuple((key_hash(h), h) for h in self.hosts))

    def owner(self, twin_id: str) -> str:
        """The host that owns ``twin_id``."""
        k = key_hash(twin_id)
        best = -1
        owner = self.hosts[0]
        for seed, host in self._seeds:
            weight = _mix(k ^ seed)
            if weight > best:
                best = weight
                owner = host
        return owner

    def with_hosts(self, hosts: Iterable[str]) -> Placement:
        """The placement over another host set."""
        return Placement(tuple(hosts))

    def moves(self, other: Placement, twin_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """Twins whose owner differs between ``self`` and ``other``: id -> (from, to)."""
        out: dict[str, tuple[str, str]] = {}
        for twin_id in twin_ids:
            before, after = self.owner(twin_id), other.owner(twin_id)
            if before != after:
                out[twin_id] = (before, after)
        return out
