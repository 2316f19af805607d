"""The telemetry sinks behave alike: ranges, ordering, limits, overwrites, retention, sharing."""

from __future__ import annotations

import math
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinfleet.runtime.telemetry import (
    MemoryTelemetrySink,
    Point,
    SqliteTelemetrySink,
    TelemetrySink,
    open_telemetry,
    points_from_message,
)
from twinfleet.runtime.telemetry import sqlite as sqlite_module

T0 = 1_700_000_000.0


def pts(twin_id: str, metric: str, *pairs: tuple[float, float]) -> list[Point]:
    """Points of one series from (ts, value) pairs."""
    return [Point(twin_id, metric, ts, value) for ts, value in pairs]


@pytest.fixture(params=["memory", "sqlite"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TelemetrySink]:
    """Each sink in turn, empty."""
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'telemetry.db'}"
    opened = open_telemetry(url)
    yield opened
    opened.close()


def test_is_a_telemetry_sink(sink: TelemetrySink) -> None:
    assert isinstance(sink, TelemetrySink)


def test_round_trip(sink: TelemetrySink) -> None:
    written = [
        Point("pump-1", "temp", T0, 21.5),
        Point("pump-1", "rpm", T0, 1500.0),
        Point("pump-1", "temp", T0 + 1, 21.75),
        Point("pump-2", "temp", T0, -3.0),
    ]
    sink.write(written)
    assert sink.query("pump-1") == [
        Point("pump-1", "rpm", T0, 1500.0),
        Point("pump-1", "temp", T0, 21.5),
        Point("pump-1", "temp", T0 + 1, 21.75),
    ]
    assert sink.query("pump-2") == [Point("pump-2", "temp", T0, -3.0)]
    assert sink.query("nobody") == []
    got = sink.query("pump-1")[0]
    assert isinstance(got, Point)
    assert type(got.ts) is float
    assert type(got.value) is float


def test_ints_come_back_as_floats(sink: TelemetrySink) -> None:
    sink.write([Point("m", "kwh", 10, 7)])  # type: ignore[arg-type]
    (point,) = sink.query("m")
    assert point == Point("m", "kwh", 10.0, 7.0)
    assert type(point.ts) is float
    assert type(point.value) is float


def test_empty_write_is_a_no_op(sink: TelemetrySink) -> None:
    sink.write([])
    assert sink.query("a") == []
    assert sink.metrics("a") == []


def test_time_range_since_inclusive_until_exclusive(sink: TelemetrySink) -> None:
    sink.write(pts("a", "t", *[(T0 + i, float(i)) for i in range(10)]))

    def times(**bounds: float | None) -> list[float]:
        return [p.ts - T0 for p in sink.query("a", **bounds)]

    assert times(since=T0 + 3, until=T0 + 6) == [3, 4, 5]
    assert times(since=T0 + 3) == [3, 4, 5, 6, 7, 8, 9]
    assert times(until=T0 + 2) == [0, 1]
    assert times(since=T0 + 2.5, until=T0 + 4.5) == [3, 4]
    assert times(since=T0 + 5, until=T0 + 5) == []
    assert times(since=T0 + 6, until=T0 + 3) == []
    assert times(since=T0 + 100) == []
    assert times(since=None, until=None) == list(range(10))


def test_metric_filter(sink: TelemetrySink) -> None:
    sink.write(
        pts("a", "temp", (T0, 1.0), (T0 + 1, 2.0))
        + pts("a", "hum", (T0, 40.0))
        + pts("a", "gps.lat", (T0 + 1, 52.5))
        + pts("b", "temp", (T0, 9.0))
    )
    assert sink.query("a", metric="temp") == pts("a", "temp", (T0, 1.0), (T0 + 1, 2.0))
    assert sink.query("a", metric="gps.lat") == pts("a", "gps.lat", (T0 + 1, 52.5))
    assert sink.query("a", metric="temp", since=T0 + 1) == pts("a", "temp", (T0 + 1, 2.0))
    assert sink.query("a", metric="nope") == []
    assert sink.query("a", metric="gps") == []  # a metric name, not a prefix
    assert sink.query("b", metric="hum") == []


def test_ordering_by_time_then_metric(sink: TelemetrySink) -> None:
    # Written out of order, in several calls.
    sink.write([Point("a", "z", T0 + 2, 1.0), Point("a", "b", T0 + 1, 2.0)])
    sink.write([Point("a", "a", T0 + 2, 3.0), Point("a", "m", T0, 4.0)])
    sink.write([Point("a", "b", T0, 5.0), Point("a", "b", T0 - 1, 6.0)])
    assert [(p.ts - T0, p.metric) for p in sink.query("a")] == [
        (-1, "b"),
        (0, "b"),
        (0, "m"),
        (1, "b"),
        (2, "a"),
        (2, "z"),
    ]
    assert [p.ts - T0 for p in sink.query("a", metric="b")] == [-1, 0, 1]


def test_limit_keeps_the_oldest(sink: TelemetrySink) -> None:
    sink.write(pts("a", "t", *[(T0 + i, float(i)) for i in range(10)]))
    sink.write(pts("a", "u", *[(T0 + i, float(i)) for i in range(10)]))
    assert [(p.ts - T0, p.metric) for p in sink.query("a", limit=3)] == [
        (0, "t"),
        (0, "u"),
        (1, "t"),
    ]
    assert [p.ts - T0 for p in sink.query("a", metric="u", limit=2)] == [0, 1]
    assert [p.ts - T0 for p in sink.query("a", metric="u", since=T0 + 8, limit=5)] == [8, 9]
    assert sink.query("a", limit=0) == []
    assert sink.query("a", limit=-1) == []
    assert len(sink.query("a")) == 20


def test_many_twins_at_once_match_one_query_each(sink: TelemetrySink) -> None:
    for twin, n in (("a", 10), ("b", 3), ("c", 6)):
        sink.write(pts(twin, "t", *[(T0 + i, float(i)) for i in range(n)]))
        sink.write(pts(twin, "u", *[(T0 + i, -float(i)) for i in range(n)]))
    wanted = ["c", "a", "nobody", "b", "a"]
    for bounds in ({}, {"since": T0 + 2, "until": T0 + 8, "limit": 5}, {"limit": 1}):
        many = sink.query_many(wanted, **bounds)
        assert set(many) == {"a", "b", "c"}  # twins without points are left out
        for twin, points in many.items():
            assert points == sink.query(twin, **bounds)
    assert sink.query_many(["a"], limit=0) == {}
    assert sink.query_many([]) == {}
    # More twins than one SQL statement takes.
    sink.write([Point(f"z{i}", "t", T0, float(i)) for i in range(1_200)])
    assert len(sink.query_many([f"z{i}" for i in range(1_200)])) == 1_200


def test_paging_with_since(sink: TelemetrySink) -> None:
    # The documented way through a long range: since=last ts, minus what was already seen.
    written = sorted(
        (Point("a", m, T0 + i, float(i)) for i in range(7) for m in ("x", "y", "z")),
        key=lambda p: (p.ts, p.metric),
    )
    sink.write(written)
    seen: list[Point] = []
    since: float | None = None
    while page := [p for p in sink.query("a", since=since, limit=4) if p not in seen]:
        seen += page
        since = page[-1].ts
    assert seen == written


def test_duplicates_overwrite(sink: TelemetrySink) -> None:
    sink.write([Point("a", "t", T0, 1.0), Point("a", "t", T0 + 1, 2.0)])
    sink.write([Point("a", "t", T0, 10.0)])
    assert sink.query("a") == [Point("a", "t", T0, 10.0), Point("a", "t", T0 + 1, 2.0)]
    # Within one call the last one wins.
    sink.write([Point("a", "t", T0 + 1, 3.0), Point("a", "t", T0 + 1, 4.0)])
    assert sink.query("a") == [Point("a", "t", T0, 10.0), Point("a", "t", T0 + 1, 4.0)]
    # An older reading (as out-of-order delivery brings) is history, not an overwrite.
    sink.write([Point("a", "t", T0 - 5, 0.5)])
    assert [p.value for p in sink.query("a")] == [0.5, 10.0, 4.0]


def test_non_finite_points_are_refused_and_nothing_is_written(sink: TelemetrySink) -> None:
    good = Point("a", "t", T0, 1.0)
    for bad in (
        Point("a", "t", T0 + 1, math.nan),
        Point("a", "t", T0 + 1, math.inf),
        Point("a", "t", math.nan, 1.0),
        Point("a", "t", -math.inf, 1.0),
    ):
        with pytest.raises(ValueError, match="not a finite number"):
            sink.write([good, bad])
    assert sink.query("a") == []
    with pytest.raises(ValueError, match="NaN"):
        sink.query("a", since=math.nan)
    with pytest.raises(ValueError, match="NaN"):
        sink.delete_before(math.nan)


def test_metrics(sink: TelemetrySink) -> None:
    assert sink.metrics("a") == []
    sink.write(
        pts("a", "temp", (T0, 1.0), (T0 + 1, 2.0), (T0 + 2, 3.0))
        + pts("a", "gps.lat", (T0, 1.0))
        + pts("a", "Hum", (T0, 1.0))
        + pts("ab", "other", (T0, 1.0))
        + pts("b", "x", (T0, 1.0))
    )
    assert sink.metrics("a") == ["Hum", "gps.lat", "temp"]
    assert sink.metrics("ab") == ["other"]
    assert sink.metrics("") == []


def test_retention(sink: TelemetrySink) -> None:
    sink.write(
        pts("a", "t", *[(T0 + i, float(i)) for i in range(10)])
        + pts("a", "old", (T0 - 100, 1.0))
        + pts("b", "t", (T0 + 3, 1.0), (T0 + 20, 2.0))
        + pts("c", "t", (T0 - 1, 1.0))
    )
    assert sink.delete_before(T0 + 5) == 5 + 1 + 1 + 1
    assert [p.ts - T0 for p in sink.query("a")] == [5, 6, 7, 8, 9]  # T0 + 5 itself stays
    assert sink.metrics("a") == ["t"]
    assert sink.query("b") == [Point("b", "t", T0 + 20, 2.0)]
    assert sink.query("c") == []
    assert sink.metrics("c") == []
    assert sink.delete_before(T0 + 5) == 0
    assert sink.delete_before(math.inf) == 6
    assert sink.query("a") == sink.query("b") == []
    sink.write([Point("a", "t", T0, 1.0)])  # still usable
    assert sink.query("a") == [Point("a", "t", T0, 1.0)]


def test_retention_of_an_empty_sink(sink: TelemetrySink) -> None:
    assert sink.delete_before(T0) == 0


# -- a model of the contract, checked against both sinks ---------------------------------------

_twin_ids = st.sampled_from(["a", "b", "a.b", "b-2"])
_metrics = st.sampled_from(["t", "u", "gps.lat", "T"])
_times = st.integers(0, 12).map(lambda i: T0 + i / 2)
_values = st.floats(-1e6, 1e6, allow_nan=False)
_points = st.builds(Point, _twin_ids, _metrics, _times, _values)
_bounds = st.none() | _times
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.lists(_points, max_size=8)),
        st.tuples(st.just("delete_before"), _times),
    ),
    max_size=8,
)
_queries = st.lists(
    st.tuples(_twin_ids, st.none() | _metrics, _bounds, _bounds, st.integers(0, 12)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(ops=_ops, queries=_queries)
def test_sinks_match_a_model(ops: list[tuple[str, Any]], queries: list[Any]) -> None:
    model: dict[tuple[str, str, float], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sinks: list[TelemetrySink] = [
            MemoryTelemetrySink(),
            SqliteTelemetrySink(f"sqlite:///{tmp}/t.db"),
        ]
        try:
            for op, arg in ops:
                if op == "write":
                    for sink in sinks:
                        sink.write(arg)
                    model.update(((p.twin_id, p.metric, p.ts), p.value) for p in arg)
                else:
                    old = [k for k in model if k[2] < arg]
                    for key in old:
                        del model[key]
                    for sink in sinks:
                        assert sink.delete_before(arg) == len(old)
            for twin_id, metric, since, until, limit in queries:
                expected = sorted(
                    (Point(t, m, ts, v) for (t, m, ts), v in model.items()),
                    key=lambda p: (p.ts, p.metric),
                )
                expected = [
                    p
                    for p in expected
                    if p.twin_id == twin_id
                    and (metric is None or p.metric == metric)
                    and (since is None or p.ts >= since)
                    and (until is None or p.ts < until)
                ][:limit]
                names = sorted({m for (t, m, _) in model if t == twin_id})
                for sink in sinks:
                    got = sink.query(twin_id, metric=metric, since=since, until=until, limit=limit)
                    assert got == expected
                    assert sink.metrics(twin_id) == names
        finally:
            for sink in sinks:
                sink.close()


# -- sqlite ------------------------------------------------------------------------------------


def test_sqlite_schema_and_settings(tmp_path: Path) -> None:
    sink = SqliteTelemetrySink(f"sqlite:///{tmp_path / 't.db'}")
    sink.write([Point("a", "t", T0, 1.0)])
    sink.close()
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'points'").fetchone()
        assert "WITHOUT ROWID" in sql
        assert "PRIMARY KEY (twin_id, metric, ts)" in sql
        assert conn.execute("SELECT * FROM points").fetchall() == [("a", "t", T0, 1.0)]


def test_sqlite_queries_use_the_primary_key(tmp_path: Path) -> None:
    sink = SqliteTelemetrySink(f"sqlite:///{tmp_path / 't.db'}")
    params = {"twin": "a", "metric": "t", "since": 0.0, "until": 1.0, "limit": 5}
    for sql in (sqlite_module._QUERY_ONE, sqlite_module._QUERY_ALL, sqlite_module._METRICS):
        plan = " | ".join(row[3] for row in sink._conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "SCAN points" not in plan, plan
        assert "USING PRIMARY KEY" in plan, plan
    sink.close()


def test_sqlite_reopen_keeps_points(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    sink = open_telemetry(url)
    sink.write(pts("a", "t", (T0, 1.0), (T0 + 1, 2.0)))
    sink.close()
    again = open_telemetry(url)
    try:
        assert again.query("a") == pts("a", "t", (T0, 1.0), (T0 + 1, 2.0))
        assert again.metrics("a") == ["t"]
    finally:
        again.close()


def test_sqlite_full_synchronous_option(tmp_path: Path) -> None:
    sink = SqliteTelemetrySink(f"sqlite:///{tmp_path / 't.db'}", synchronous="FULL")
    assert sink._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    sink.close()
    with pytest.raises(ValueError, match="synchronous"):
        SqliteTelemetrySink(f"sqlite:///{tmp_path / 't.db'}", synchronous="OFF")  # type: ignore[arg-type]


def test_sqlite_shared_by_two_instances(tmp_path: Path) -> None:
    # Two connections to one file, as two hosts' processes on one machine would have.
    url = f"sqlite:///{tmp_path / 't.db'}"
    first, second = SqliteTelemetrySink(url), SqliteTelemetrySink(url)
    try:
        first.write(pts("a", "t", (T0, 1.0), (T0 + 1, 2.0)))
        second.write(pts("b", "t", (T0, 3.0)) + pts("a", "t", (T0 + 1, 20.0)))
        assert first.query("a") == pts("a", "t", (T0, 1.0), (T0 + 1, 20.0))
        assert first.metrics("b") == ["t"]
        assert second.query("a") == first.query("a")
        assert second.delete_before(T0 + 1) == 2
        assert first.query("a") == pts("a", "t", (T0 + 1, 20.0))
        assert first.query("b") == []
    finally:
        first.close()
        second.close()


def test_sqlite_concurrent_writers(tmp_path: Path) -> None:
    # Each thread has its own sink (connection): they contend for the file's write lock
    # exactly as processes do, and BEGIN IMMEDIATE with the busy timeout makes them take turns.
    url = f"sqlite:///{tmp_path / 't.db'}"
    writers, rounds, per_batch = 3, 30, 50
    sinks = [SqliteTelemetrySink(url) for _ in range(writers)]
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def run(index: int) -> None:
        try:
            start.wait()
            sink = sinks[index]
            for r in range(rounds):
                batch = [Point(f"w{index}", f"m{j}", T0 + r, float(r)) for j in range(per_batch)]
                sink.write(batch)
                sink.query(f"w{(index + 1) % writers}", limit=10)
                if r % 10 == 9:
                    sink.delete_before(T0 - 1)  # retention running beside the writers
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        for index in range(writers):
            assert len(sinks[0].query(f"w{index}", limit=100_000)) == rounds * per_batch
            assert len(sinks[0].metrics(f"w{index}")) == per_batch
    finally:
        for sink in sinks:
            sink.close()


def test_sqlite_retention_in_several_transactions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "_RETENTION_SERIES_PER_TX", 3)
    monkeypatch.setattr(sqlite_module, "_RETENTION_POINTS_PER_TX", 5)
    sink = SqliteTelemetrySink(f"sqlite:///{tmp_path / 't.db'}")
    commits = 0
    write = sink._write

    def counting_write(action: str) -> Any:
        nonlocal commits
        commits += 1
        return write(action)

    monkeypatch.setattr(sink, "_write", counting_write)
    points = [
        Point(f"twin-{t}", f"m{m}", T0 + i, float(i))
        for t in range(4)
        for m in range(3)
        for i in range(4)
    ]
    sink.write(points)
    commits = 0
    # 12 series, 3 points each older than T0 + 3: commits after every 2 series (6 >= 5 points).
    assert sink.delete_before(T0 + 3) == 36
    assert commits == 6
    assert sorted(sink.query(f"twin-{t}")[0].ts - T0 for t in range(4)) == [3, 3, 3, 3]
    assert sum(len(sink.query(f"twin-{t}")) for t in range(4)) == 12
    # Series with nothing to delete cost no DELETE; they are counted per transaction too.
    commits = 0
    assert sink.delete_before(T0 + 3) == 0
    assert commits == 4
    sink.close()


def test_sqlite_creates_parent_directory_and_takes_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / "deep" / "er" / "telemetry.db"
    sink = open_telemetry(f"sqlite:///{deep}")
    sink.write([Point("a", "t", T0, 1.0)])
    sink.close()
    assert deep.is_file()
    monkeypatch.chdir(tmp_path)
    sink = open_telemetry("sqlite:///data/telemetry.db")
    sink.close()
    assert (tmp_path / "data" / "telemetry.db").is_file()


def test_sqlite_used_from_another_thread(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sink = SqliteTelemetrySink(f"sqlite:///{tmp_path / 't.db'}")
    with ThreadPoolExecutor(1) as pool:
        pool.submit(sink.write, [Point("a", "t", T0, 1.0)]).result()
        assert pool.submit(sink.query, "a").result() == [Point("a", "t", T0, 1.0)]
    sink.close()


# -- points_from_message -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"temp": 21.5, "hum": 40}, [("temp", 21.5), ("hum", 40.0)]),
        ({"ts": 1_700_000_123, "temp": 1.0}, [("temp", 1.0)]),
        (
            {"gps": {"lat": 52.5, "lon": 13.4}, "speed": 3},
            [("gps.lat", 52.5), ("gps.lon", 13.4), ("speed", 3.0)],
        ),
        ({"a": {"b": {"c": 1, "ts": 2}}}, [("a.b.c", 1.0), ("a.b.ts", 2.0)]),  # only top-level ts
        ({"motion": True, "door_open": False}, [("motion", 1.0), ("door_open", 0.0)]),
        ({"state": "running", "note": None, "list": [1, 2], "empty": {}}, []),
        ({"x": math.nan, "y": math.inf, "z": -math.inf, "ok": 0}, [("ok", 0.0)]),
        ({"big": 10**400, "neg": -(2**63)}, [("neg", float(-(2**63)))]),
        ({"a.b": 1, "a": {"b": 2}}, [("a.b", 1.0), ("a.b", 2.0)]),  # same name: last one wins
        ({1: 5, "k": 6}, [("k", 6.0)]),
        ({}, []),
    ],
)
def test_points_from_message(payload: dict[Any, Any], expected: list[tuple[str, float]]) -> None:
    points = points_from_message("dev-1", payload, T0)
    assert [(p.metric, p.value) for p in points] == expected
    assert all(p.twin_id == "dev-1" and p.ts == T0 for p in points)
    assert all(type(p.value) is float for p in points)


def test_points_from_message_keeps_order_through_nesting() -> None:
    payload = {"a": 1, "b": {"c": 2, "d": {"e": 3}, "f": 4}, "g": 5}
    names = [p.metric for p in points_from_message("d", payload, T0)]
    assert names == ["a", "b.c", "b.d.e", "b.f", "g"]


def test_points_from_message_deep_nesting() -> None:
    payload: dict[str, Any] = {"v": 1}
    for _ in range(2000):  # deeper than Python's recursion limit
        payload = {"n": payload}
    (point,) = points_from_message("d", payload, T0)
    assert point.metric == "n." * 2000 + "v"


def test_points_from_message_refuses_a_non_finite_time() -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        points_from_message("d", {"t": 1}, math.nan)


def test_points_from_message_into_a_sink(sink: TelemetrySink) -> None:
    sink.write(points_from_message("dev-1", {"temp": 20, "gps": {"lat": 1.5}}, T0))
    sink.write(points_from_message("dev-1", {"temp": 21, "ts": T0 + 1}, T0 + 1))
    assert sink.metrics("dev-1") == ["gps.lat", "temp"]
    assert [p.value for p in sink.query("dev-1", metric="temp")] == [20.0, 21.0]


# -- URLs --------------------------------------------------------------------------------------


def test_open_telemetry_by_scheme(tmp_path: Path) -> None:
    memory = open_telemetry("memory://")
    assert isinstance(memory, MemoryTelemetrySink)
    assert memory.url == "memory://"
    url = f"sqlite:///{tmp_path / 't.db'}"
    sqlite_sink = open_telemetry(url)
    assert isinstance(sqlite_sink, SqliteTelemetrySink)
    assert sqlite_sink.url == url
    assert sqlite_sink.path == tmp_path / "t.db"
    sqlite_sink.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("influx://h:8086/db", "names no bucket"),  # influx:// is known; this one is malformed
        ("redis://h:6379/0", "unknown telemetry scheme 'redis'"),
        ("telemetry.db", "malformed telemetry URL"),
        ("", "malformed telemetry URL"),
        ("memory://x", "malformed telemetry URL"),
        ("sqlite://telemetry.db", "malformed SQLite store URL"),
        ("sqlite:///", "malformed SQLite store URL"),
        ("sqlite:///:memory:", "memory://"),
    ],
)
def test_open_telemetry_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_telemetry(url)
