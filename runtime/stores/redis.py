"""``RedisStore``: the shared ``StateStore`` for a cluster, on Redis."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import EqualJitterBackoff
from redis.retry import Retry

from twinfleet.errors import StoreUnavailable

from ._codec import decode, doc_id, encode
from .base import Change, Snapshot

__all__ = ["RedisStore"]

_CHUNK = 1000  # keys per MGET / DEL
_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")  # no ':' so one prefix never covers another
_OUR_OPTIONS = ("prefix", "retries")


class RedisStore:
    """Snapshots and registry entries under one key prefix of a Redis database.

    URL: ``redis[s]://[user:password@]host:port/db?prefix=twinfleet``; other query options
    (``socket_timeout``, ``socket_connect_timeout``, ...) go to redis-py, ``retries`` sets how
    often a command is retried, with jittered exponential backoff, after a connection error.

    Keys: ``{prefix}:twin:{id}`` and ``{prefix}:reg:{id}`` hold orjson bytes; the sorted sets
    ``{prefix}:twins`` and ``{prefix}:registry`` hold every id with score 0, so id order is
    lexicographic order and pages are ``ZRANGEBYLEX`` ranges.
    """

    def __init__(
        self,
        url: str,
        *,
        retries: int = 3,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 2.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 1.0,
    ) -> None:
        self.url = url
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"malformed Redis store URL {url!r}: scheme must be redis or rediss")
        try:
            port = parts.port or 6379
        except ValueError as err:
            raise ValueError(f"malformed Redis store URL {url!r}: {err}") from None
        db = parts.path.strip("/") or "0"
        if not db.isdigit():
            raise ValueError(f"malformed Redis store URL {url!r}: database {db!r} is not a number")
        query = dict(parse_qsl(parts.query))
        self.prefix = query.get("prefix", "twinfleet")
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise ValueError(f"Redis key prefix {self.prefix!r} must match {_PREFIX_RE.pattern}")
        if "retries" in query:
            if not query["retries"].isdigit():
                raise ValueError(f"malformed Redis store URL {url!r}: retries must be a count")
            retries = int(query["retries"])
        self._where = f"{parts.hostname or 'localhost'}:{port}/{db} (prefix {self.prefix!r})"
        rest = urlencode({k: v for k, v in query.items() if k not in _OUR_OPTIONS})
        # Options in the URL query override these keywords (redis-py's from_url rule).
        self._redis = redis.Redis.from_url(
            urlunsplit(parts._replace(query=rest)),
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            retry=Retry(EqualJitterBackoff(cap=backoff_cap, base=backoff_base), retries),
        )
        self._twins, self._registry = f"{self.prefix}:twins", f"{self.prefix}:registry"

    def _twin(self, twin_id: str) -> str:
        return f"{self.prefix}:twin:{twin_id}"

    def _reg(self, device_id: str) -> str:
        return f"{self.prefix}:reg:{device_id}"

    @contextmanager
    def _reach(self, action: str) -> Iterator[None]:
        """Turn Redis being unreachable (after retries) into ``StoreUnavailable``."""
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as err:
            raise StoreUnavailable(f"Redis at {self._where} could not {action}: {err}") from err

    def load_many(self, ids: Sequence[str]) -> dict[str, Snapshot]:
        """Snapshots of those ``ids`` that exist, by id."""
        found: dict[str, Snapshot] = {}
        with self._reach(f"load {len(ids)} snapshots"):
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                raws = self._redis.mget([self._twin(i) for i in chunk])
                found.update(
                    (i, decode(raw)) for i, raw in zip(chunk, raws, strict=True) if raw is not None
                )
        return found

    def save_many(self, snapshots: Sequence[Mapping[str, Any]]) -> None:
        """Write many snapshots in one pipeline (MSET, then ZADD of their ids)."""
        docs = {doc_id(s): encode(s) for s in snapshots}
        if not docs:
            return
        with self._reach(f"save {len(docs)} snapshots"):
            # Not a transaction: keys before index, so the index never names a missing key.
            pipe = self._redis.pipeline(transaction=False)
            pipe.mset({self._twin(i): doc for i, doc in docs.items()})
            pipe.zadd(self._twins, dict.fromkeys(docs, 0))
            pipe.execute()

    def commit(
        self, snapshot: Mapping[str, Any], *, registry: Mapping[str, Any] | None = None
    ) -> None:
        """Write one snapshot, its index entry and registry entry atomically (MULTI/EXEC)."""
        self.commit_many([(snapshot, registry)])

    def commit_many(self, changes: Sequence[Change]) -> None:
        """Write several snapshots with their index and registry entries in one MULTI/EXEC."""
        with self._reach(f"commit twin {doc_id(changes[0][0])!r}" if changes else "commit"):
            pipe = self._redis.pipeline(transaction=True)
            for snapshot, registry in changes:
                twin_id = doc_id(snapshot)
                pipe.set(self._twin(twin_id), encode(snapshot))
                pipe.zadd(self._twins, {twin_id: 0})
                if registry is not None:
                    device_id = doc_id(registry)
                    pipe.set(self._reg(device_id), encode(registry))
                    pipe.zadd(self._registry, {device_id: 0})
            pipe.execute()

    def delete_many(self, ids: Sequence[str]) -> None:
        """Forget the snapshots of ``ids`` (keys and index together); missing ids are ignored."""
        with self._reach(f"delete {len(ids)} snapshots"):
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                pipe = self._redis.pipeline(transaction=True)
                pipe.delete(*(self._twin(i) for i in chunk))
                pipe.zrem(self._twins, *chunk)
                pipe.execute()

    def scan(self, *, after: str | None = None, limit: int = 1000) -> list[Snapshot]:
        """Up to ``limit`` snapshots in id order, starting after id ``after``."""
        with self._reach("scan snapshots"):
            return self._page(self._twins, self._twin, after, limit)

    def count(self) -> int:
        """How many twin snapshots the store holds."""
        with self._reach("count snapshots"):
            return self._redis.zcard(self._twins)

    def put_registry(self, entry: Mapping[str, Any]) -> None:
        """Durably write a registry entry and its index entry atomically, replacing any."""
        device_id, doc = doc_id(entry), encode(entry)
        with self._reach(f"write the registry entry of {device_id!r}"):
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(self._reg(device_id), doc)
            pipe.zadd(self._registry, {device_id: 0})
            pipe.execute()

    def get_registry(self, device_id: str) -> dict[str, Any] | None:
        """The registry entry of ``device_id``, if any."""
        with self._reach(f"read the registry entry of {device_id!r}"):
            raw = self._redis.get(self._reg(device_id))
        return None if raw is None else decode(raw)

    def list_registry(self, *, after: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Up to ``limit`` registry entries in id order, starting after id ``after``."""
        with self._reach("list registry entries"):
            return self._page(self._registry, self._reg, after, limit)

    def _page(
        self, index: str, key: Callable[[str], str], after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """A page read from the index; ids deleted between the two reads are skipped, and the
        next ids fetched instead, so a short page still means the end."""
        page: list[dict[str, Any]] = []
        start = "-" if after is None else f"({after}"
        while len(page) < limit:
            ids = self._redis.zrangebylex(index, start, "+", start=0, num=limit - len(page))
            if not ids:
                break
            names = [i.decode() if isinstance(i, bytes) else i for i in ids]
            raws = self._redis.mget([key(i) for i in names])
            page.extend(decode(raw) for raw in raws if raw is not None)
            start = f"({names[-1]}"
        return page

    def put_item(self, kind: str, key: str, doc: Mapping[str, Any]) -> None:
        """Durably write a document of another kind (a field of the kind's hash)."""
        with self._reach(f"write {kind} {key!r}"):
            self._redis.hset(f"{self.prefix}:items:{kind}", key, encode(doc))

    def get_item(self, kind: str, key: str) -> dict[str, Any] | None:
        """The document ``key`` of ``kind``, if any."""
        with self._reach(f"read {kind} {key!r}"):
            raw = self._redis.hget(f"{self.prefix}:items:{kind}", key)
        return None if raw is None else decode(raw)

    def list_items(self, kind: str) -> list[dict[str, Any]]:
        """Every document of ``kind``, in key order."""
        with self._reach(f"list {kind}"):
            found = self._redis.hgetall(f"{self.prefix}:items:{kind}")
        return [decode(found[k]) for k in sorted(found)]

    def delete_item(self, kind: str, key: str) -> bool:
        """Forget a document; returns whether it existed."""
        with self._reach(f"delete {kind} {key!r}"):
            return bool(self._redis.hdel(f"{self.prefix}:items:{kind}", key))

    def clear(self) -> None:
        """Delete every key under this store's prefix, and no other key."""
        with self._reach("clear"):
            batch: list[bytes | str] = []
            for name in self._redis.scan_iter(match=f"{self.prefix}:*", count=_CHUNK):
                batch.append(name)
                if len(batch) == _CHUNK:
                    self._redis.delete(*batch)
                    batch.clear()
            if batch:
                self._redis.delete(*batch)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()
