"""State stores: where twin snapshots and registry entries live, chosen by URL.

``memory://`` (in-process, per process), ``sqlite:///path.db`` (embedded default, shared by the
processes of one machine) and ``redis[s]://host:port/db?prefix=...`` (shared by a cluster).
"""

from __future__ import annotations

import os

from .base import Snapshot, StateStore
from .memory import MemoryStore
from .redis import RedisStore
from .sqlite import SqliteStore, sqlite_path

__all__ = [
    "MemoryStore",
    "RedisStore",
    "Snapshot",
    "SqliteStore",
    "StateStore",
    "open_store",
    "resolve_store_url",
]

_SCHEMES = "memory://, sqlite:///path.db, redis://host:port/db or rediss://..."


def open_store(url: str) -> StateStore:
    """The store a URL names; ``ValueError`` for an unknown scheme or a malformed URL."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"malformed store URL {url!r}: expected one of {_SCHEMES}")
    if scheme == "memory":
        if rest:
            raise ValueError(f"malformed store URL {url!r}: memory:// takes nothing after it")
        return MemoryStore(url)
    if scheme == "sqlite":
        return SqliteStore(url)
    if scheme in ("redis", "rediss"):
        return RedisStore(url)
    raise ValueError(f"unknown store scheme {scheme!r} in {url!r}: expected one of {_SCHEMES}")


def resolve_store_url(url: str) -> str:
    """``url`` with a relative SQLite path made absolute (Ray workers may run elsewhere)."""
    if not url.startswith("sqlite:"):
        return url
    return "sqlite:///" + os.path.abspath(sqlite_path(url))
