"""The three ``StateStore`` implementations behave alike; sqlite and redis keep their promises."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import free_port

from twinfleet.errors import StoreUnavailable
from twinfleet.runtime.stores import (
    MemoryStore,
    RedisStore,
    SqliteStore,
    StateStore,
    open_store,
    resolve_store_url,
)


def snap(twin_id: str, **fields: Any) -> dict[str, Any]:
    """A small snapshot-shaped document."""
    return {"id": twin_id, "version": 1, "reported": {"t": 21.5}, **fields}


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.services)],
)
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    """Each store in turn, empty."""
    kind = request.param
    if kind == "memory":
        url = "memory://"
    elif kind == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("redis_url")
    opened = open_store(url)
    yield opened
    opened.close()


def test_is_a_state_store(store: StateStore) -> None:
    assert isinstance(store, StateStore)


def test_round_trip(store: StateStore) -> None:
    docs = [snap("a", tags={"site": "x"}, desired={"rate": None, "list": [1, 2.5, "s"]}), snap("b")]
    store.save_many(docs)
    assert store.load_many(["a", "b"]) == {"a": docs[0], "b": docs[1]}
    store.commit(snap("c", version=7))
    assert store.load_many(["c"]) == {"c": snap("c", version=7)}
    assert store.count() == 3


def test_overwrite(store: StateStore) -> None:
    store.save_many([snap("a")])
    store.save_many([snap("a", version=2)])
    assert store.load_many(["a"])["a"]["version"] == 2
    store.commit(snap("a", version=3))
    assert store.load_many(["a"])["a"]["version"] == 3
    assert store.count() == 1


def test_missing_ids_and_empty_calls(store: StateStore) -> None:
    store.save_many([snap("a")])
    assert store.load_many(["nope", "a", "also-nope"]) == {"a": snap("a")}
    assert store.load_many([]) == {}
    store.save_many([])
    store.delete_many([])
    assert store.count() == 1


def test_many_ids(store: StateStore) -> None:
    # More than one IN chunk (sqlite, 500) and one MGET chunk (redis, 1000).
    ids = [f"dev-{i:05d}" for i in range(1203)]
    store.save_many([snap(i) for i in ids])
    assert store.count() == len(ids)
    assert set(store.load_many([*ids, "missing"])) == set(ids)
    store.delete_many(ids[:1100])
    assert store.count() == 103


def test_delete(store: StateStore) -> None:
    store.save_many([snap("a"), snap("b"), snap("c")])
    store.delete_many(["a", "c", "never-there"])
    assert store.load_many(["a", "b", "c"]) == {"b": snap("b")}
    assert [s["id"] for s in store.scan()] == ["b"]
    assert store.count() == 1


def test_scan_order_and_pagination(store: StateStore) -> None:
    ids = ["pump-10", "pump-2", "Meter:1", "a.b", "pump-1", "z_9", "pump-1a"]
    store.save_many([snap(i) for i in ids])
    assert [s["id"] for s in store.scan()] == sorted(ids)
    seen: list[str] = []
    after: str | None = None
    while page := store.scan(after=after, limit=3):
        assert len(page) <= 3
        seen += [s["id"] for s in page]
        after = page[-1]["id"]
    assert seen == sorted(ids)
    assert [s["id"] for s in store.scan(after="pump-1", limit=2)] == ["pump-10", "pump-1a"]
    assert [s["id"] for s in store.scan(after="pump-0")][:1] == ["pump-1"]  # not a stored id
    assert store.scan(after="zzz") == []
    assert store.scan(limit=0) == []
    assert store.scan()[0] == snap("Meter:1")


def test_count_empty(store: StateStore) -> None:
    assert store.count() == 0
    assert store.scan() == []
    assert store.list_registry() == []


def test_registry(store: StateStore) -> None:
    assert store.get_registry("a") is None
    store.put_registry({"id": "b", "type": "meter", "placement": "virtual"})
    store.put_registry({"id": "a", "type": "sensor"})
    store.put_registry({"id": "c", "type": "plc"})
    store.put_registry({"id": "a", "type": "sensor", "placement": "dedicated"})
    assert store.get_registry("a") == {"id": "a", "type": "sensor", "placement": "dedicated"}
    assert [e["id"] for e in store.list_registry()] == ["a", "b", "c"]
    assert [e["id"] for e in store.list_registry(after="a", limit=1)] == ["b"]
    assert store.list_registry(after="c") == []
    # Registry and snapshots are separate namespaces.
    assert store.count() == 0
    assert store.load_many(["a"]) == {}


def test_documents_need_an_id(store: StateStore) -> None:
    with pytest.raises(ValueError, match="'id'"):
        store.commit({"version": 1})
    with pytest.raises(ValueError, match="'id'"):
        store.save_many([snap("ok"), {"id": 3}])
    with pytest.raises(ValueError, match="'id'"):
        store.put_registry({"type": "sensor"})


def test_clear(store: StateStore) -> None:
    store.save_many([snap("a"), snap("b")])
    store.put_registry({"id": "a"})
    store.clear()
    assert store.count() == 0
    assert store.scan() == []
    assert store.load_many(["a", "b"]) == {}
    assert store.get_registry("a") is None
    assert store.list_registry() == []
    store.commit(snap("a"))  # still usable
    assert store.count() == 1


def test_snapshots_are_copies(store: StateStore) -> None:
    doc = snap("a", desired={"rate": 5})
    store.commit(doc)
    doc["desired"]["rate"] = 99
    loaded = store.load_many(["a"])["a"]
    assert loaded["desired"]["rate"] == 5
    loaded["desired"]["rate"] = 42
    loaded["reported"].clear()
    assert store.load_many(["a"])["a"] == snap("a", desired={"rate": 5})
    store.scan()[0]["version"] = 1000
    store.put_registry({"id": "a", "tags": {"k": "v"}})
    entry = store.get_registry("a")
    assert entry is not None
    entry["tags"]["k"] = "changed"
    assert store.get_registry("a") == {"id": "a", "tags": {"k": "v"}}
    assert store.list_registry()[0] == {"id": "a", "tags": {"k": "v"}}
    assert store.scan()[0]["version"] == 1


# -- sqlite ------------------------------------------------------------------------------------


def test_sqlite_shared_by_two_instances(sqlite_url: str) -> None:
    first, second = SqliteStore(sqlite_url), SqliteStore(sqlite_url)
    try:
        first.commit(snap("a"))
        second.save_many([snap("b"), snap("a", version=2)])
        first.put_registry({"id": "a"})
        assert first.load_many(["a", "b"]) == {"a": snap("a", version=2), "b": snap("b")}
        assert second.get_registry("a") == {"id": "a"}
        second.delete_many(["b"])
        assert first.count() == 1
    finally:
        first.close()
        second.close()


def test_sqlite_reopen_keeps_data_and_settings(sqlite_url: str) -> None:
    store = SqliteStore(sqlite_url)
    store.save_many([snap("a"), snap("b")])
    store.put_registry({"id": "a", "placement": "dedicated"})
    store.close()
    again = open_store(sqlite_url)
    try:
        assert again.count() == 2
        assert again.get_registry("a") == {"id": "a", "placement": "dedicated"}
    finally:
        again.close()
    with sqlite3.connect(SqliteStore(sqlite_url).path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite_creates_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    store = open_store(f"sqlite:///{path}")
    store.commit(snap("a"))
    store.close()
    assert path.is_file()


def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///data/state.db")
    store.commit(snap("a"))
    store.close()
    assert (tmp_path / "data" / "state.db").is_file()


def test_sqlite_used_from_another_thread(sqlite_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = SqliteStore(sqlite_url)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(store.commit, snap("a")).result()
        assert pool.submit(store.count).result() == 1
    store.close()


_WRITER = """
import sys
from twinfleet.runtime.stores import SqliteStore

url, worker, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = SqliteStore(url)
for i in range(rounds):
    store.commit({"id": f"w{worker}-c{i:03d}"})
    store.save_many([{"id": f"w{worker}-b{i:03d}-{j}"} for j in range(5)])
    store.put_registry({"id": f"w{worker}-{i:03d}"})
    store.count()
store.close()
"""


@pytest.mark.slow
def test_sqlite_concurrent_processes(sqlite_url: str) -> None:
    rounds = 40
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, sqlite_url, str(w), str(rounds)])
        for w in range(3)
    ]
    assert [proc.wait(60) for proc in procs] == [0, 0, 0]
    store = SqliteStore(sqlite_url)
    assert store.count() == 3 * rounds * 6
    assert len(store.list_registry(limit=10_000)) == 3 * rounds
    store.close()


# -- redis -------------------------------------------------------------------------------------


@pytest.mark.services
def test_redis_clear_leaves_other_prefixes_alone(redis_url: str) -> None:
    import redis

    other_prefix = f"{redis_url.rsplit('=', 1)[1]}x"  # shares the first prefix's characters
    other = RedisStore(f"{redis_url}x")
    assert other.prefix == other_prefix
    mine = RedisStore(redis_url)
    raw = redis.Redis.from_url(redis_url.split("?", maxsplit=1)[0])
    try:
        other.commit(snap("a"))
        other.put_registry({"id": "a"})
        raw.set(f"{other_prefix}:unrelated", b"1")
        mine.commit(snap("a"))
        mine.clear()
        assert mine.count() == 0
        assert other.count() == 1
        assert other.get_registry("a") == {"id": "a"}
        assert raw.get(f"{other_prefix}:unrelated") == b"1"
    finally:
        other.clear()
        for client in (other, mine, raw):
            client.close()


@pytest.mark.services
def test_redis_key_layout(redis_url: str) -> None:
    import redis

    store = RedisStore(redis_url)
    raw = redis.Redis.from_url(redis_url.split("?", maxsplit=1)[0])
    try:
        store.save_many([snap("a")])
        store.put_registry({"id": "a"})
        p = store.prefix
        assert raw.zrange(f"{p}:twins", 0, -1, withscores=True) == [(b"a", 0.0)]
        assert raw.zrange(f"{p}:registry", 0, -1) == [b"a"]
        assert raw.exists(f"{p}:twin:a", f"{p}:reg:a") == 2
    finally:
        store.close()
        raw.close()


@pytest.mark.services
def test_redis_scan_skips_keys_deleted_behind_the_index(redis_url: str) -> None:
    import redis

    store = RedisStore(redis_url)
    raw = redis.Redis.from_url(redis_url.split("?", maxsplit=1)[0])
    try:
        store.save_many([snap(i) for i in "abcde"])
        raw.delete(f"{store.prefix}:twin:b")  # as if deleted between ZRANGEBYLEX and MGET
        assert [s["id"] for s in store.scan(limit=3)] == ["a", "c", "d"]
    finally:
        store.close()
        raw.close()


@pytest.mark.timeout(10)
def test_redis_unreachable_raises_store_unavailable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?prefix=tf&retries=1&socket_connect_timeout=0.2"
    store = RedisStore(url, backoff_base=0.01)
    with pytest.raises(StoreUnavailable, match=r"could not commit twin 'a'") as info:
        store.commit(snap("a"))
    assert info.value.code == "store_unavailable"
    with pytest.raises(StoreUnavailable):
        store.put_registry({"id": "a"})
    with pytest.raises(StoreUnavailable):
        store.save_many([snap("a")])
    store.close()


# -- URLs --------------------------------------------------------------------------------------


def test_open_store_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    sqlite_store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(sqlite_store, SqliteStore)
    sqlite_store.close()
    for url in ("redis://127.0.0.1:6379/9?prefix=p", "rediss://h:6380", "redis://h"):
        redis_store = open_store(url)  # connects lazily
        assert isinstance(redis_store, RedisStore)
        assert redis_store.url == url
        redis_store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://h/db", "unknown store scheme 'postgres'"),
        ("state.db", "malformed store URL"),
        ("", "malformed store URL"),
        ("memory://x", "malformed store URL"),
        ("sqlite://state.db", "malformed SQLite store URL"),
        ("sqlite:///", "malformed SQLite store URL"),
        ("sqlite:///:memory:", "memory://"),
        ("redis://h:port/0", "malformed Redis store URL"),
        ("redis://h/zero", "malformed Redis store URL"),
        ("redis://h/0?retries=many", "malformed Redis store URL"),
        ("redis://h/0?prefix=a:b", "prefix"),
        ("redis://h/0?prefix=a*", "prefix"),
    ],
)
def test_open_store_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        open_store(url)


def test_resolve_store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_store_url("sqlite:///.twinfleet/state.db") == (
        f"sqlite:///{tmp_path / '.twinfleet' / 'state.db'}"
    )
    assert resolve_store_url("sqlite:///a/../b.db") == f"sqlite:///{tmp_path / 'b.db'}"
    assert resolve_store_url("sqlite:////abs/state.db") == "sqlite:////abs/state.db"
    for url in ("memory://", "redis://h:6379/0?prefix=p", "rediss://h"):
        assert resolve_store_url(url) == url
    with pytest.raises(ValueError, match="malformed SQLite store URL"):
        resolve_store_url("sqlite://rel.db")


def test_resolved_url_opens_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    resolved = resolve_store_url("sqlite:///state.db")
    first = open_store("sqlite:///state.db")
    first.commit(snap("a"))
    first.close()
    monkeypatch.chdir(os.sep)  # another cwd, as a Ray worker may have
    second = open_store(resolved)
    assert second.count() == 1
    second.close()


def test_memory_stores_are_separate() -> None:
    first, second = open_store("memory://"), open_store("memory://")
    first.commit(snap("a"))
    assert second.count() == 0


def test_items_of_other_kinds(store: StateStore) -> None:
    store.put_item("tokens", "b", {"id": "b", "role": "viewer"})
    store.put_item("tokens", "a", {"id": "a", "role": "admin"})
    store.put_item("other", "a", {"x": 1})
    assert store.get_item("tokens", "a") == {"id": "a", "role": "admin"}
    assert store.get_item("tokens", "zzz") is None
    assert [d["id"] for d in store.list_items("tokens")] == ["a", "b"]
    store.put_item("tokens", "a", {"id": "a", "role": "operator"})
    assert store.get_item("tokens", "a") == {"id": "a", "role": "operator"}
    assert store.delete_item("tokens", "a") is True
    assert store.delete_item("tokens", "a") is False
    assert [d["id"] for d in store.list_items("tokens")] == ["b"]
    assert store.list_items("other") == [{"x": 1}]
    store.clear()
    assert store.list_items("tokens") == []
