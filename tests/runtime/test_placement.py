"""Rendezvous (HRW) placement: deterministic, stable across processes, balanced, minimal moves."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twinfleet.runtime.placement import Placement, key_hash

ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"

host_names = st.text(alphabet=ID_CHARS, min_size=1, max_size=12)
host_sets = st.lists(host_names, min_size=1, max_size=8, unique=True)
device_ids = st.text(alphabet=ID_CHARS, min_size=1, max_size=128)

HOSTS = ("host-0", "host-1", "host-2", "host-3")


def ids(n: int, prefix: str = "dev") -> list[str]:
    """``n`` distinct device ids."""
    return [f"{prefix}-{i:06d}" for i in range(n)]


# -- validation -----------------------------------------------------------------------------------


def test_no_hosts_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one host"):
        Placement(())


def test_duplicate_hosts_are_an_error() -> None:
    with pytest.raises(ValueError, match="unique"):
        Placement(("a", "b", "a"))


def test_with_hosts_validates_too() -> None:
    placement = Placement(HOSTS)
    with pytest.raises(ValueError, match="at least one host"):
        placement.with_hosts([])
    with pytest.raises(ValueError, match="unique"):
        placement.with_hosts(["x", "x"])


def test_with_hosts_takes_any_iterable() -> None:
    placement = Placement(("a",)).with_hosts(h for h in ("b", "c"))
    assert placement.hosts == ("b", "c")
    assert placement == Placement(("b", "c"))


# -- determinism and stability --------------------------------------------------------------------


def test_key_hash_is_blake2b_64_little_endian() -> None:
    for key in ("", "pump-7", "x" * 128, "ünïcödé"):
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        assert key_hash(key) == int.from_bytes(digest, "little")
        assert 0 <= key_hash(key) < 1 << 64


def test_single_host_owns_everything() -> None:
    placement = Placement(("only",))
    assert {placement.owner(i) for i in ids(1000)} == {"only"}


def test_owner_is_deterministic() -> None:
    first, second = Placement(HOSTS), Placement(HOSTS)
    for twin_id in ids(2000):
        owner = first.owner(twin_id)
        assert owner == first.owner(twin_id) == second.owner(twin_id)


# Hosts of different releases must agree on owners during a rolling upgrade: pin a few.
GOLDEN_OWNERS = {
    "pump-7": "host-1",
    "sensor-1": "host-2",
    "meter:42": "host-2",
    "a": "host-0",
    "tracker.9": "host-1",
    "plc-000017": "host-0",
    "Z": "host-1",
}


def test_owners_match_the_pinned_table() -> None:
    placement = Placement(HOSTS)
    assert {i: placement.owner(i) for i in GOLDEN_OWNERS} == GOLDEN_OWNERS


def test_owners_are_the_same_in_another_process() -> None:
    twin_ids = ids(3000, prefix="proc")
    here = Placement(HOSTS)
    expected = {i: here.owner(i) for i in twin_ids}
    script = (
        "import json, sys\n"
        "from twinfleet.runtime.placement import Placement\n"
        "hosts, twin_ids = json.load(sys.stdin)\n"
        "p = Placement(tuple(hosts))\n"
        "json.dump({i: p.owner(i) for i in twin_ids}, sys.stdout)\n"
    )
    # A different string-hash seed in the child: ``hash()`` would change, owners must not.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([list(HOSTS), twin_ids]),
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    assert json.loads(out.stdout) == expected


@given(hosts=host_sets, twin_id=device_ids, data=st.data())
def test_owner_is_one_of_the_hosts_whatever_their_order(
    hosts: list[str], twin_id: str, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(hosts))
    owner = Placement(tuple(hosts)).owner(twin_id)
    assert owner in hosts
    assert Placement(tuple(shuffled)).owner(twin_id) == owner


# -- balance --------------------------------------------------------------------------------------


def test_balanced_over_four_hosts() -> None:
    placement = Placement(HOSTS)
    n = 100_000
    counts = collections.Counter(placement.owner(i) for i in ids(n))
    assert set(counts) == set(HOSTS)
    for host in HOSTS:
        # 25% each; one percentage point is ~7 standard deviations at this n
        assert abs(counts[host] / n - 0.25) < 0.01, counts


def test_balanced_with_realistic_host_names_and_ids() -> None:
    hosts = tuple(f"twinhost-{i}" for i in range(7))
    placement = Placement(hosts)
    n = 70_000
    counts = collections.Counter(placement.owner(f"sensor:{i}") for i in range(n))
    for host in hosts:
        assert abs(counts[host] / n - 1 / 7) < 0.01, counts


# -- minimal movement -----------------------------------------------------------------------------


def test_adding_a_host_moves_only_its_share_and_only_to_it() -> None:
    before = Placement(HOSTS)
    after = before.with_hosts((*HOSTS, "host-4"))
    twin_ids = ids(50_000)
    moved = before.moves(after, twin_ids)
    assert abs(len(moved) / len(twin_ids) - 1 / 5) < 0.01
    assert {to for _, to in moved.values()} == {"host-4"}
    # every host gives up about the same share to the newcomer
    givers = collections.Counter(src for src, _ in moved.values())
    assert set(givers) == set(HOSTS)
    for host in HOSTS:
        assert abs(givers[host] / len(moved) - 0.25) < 0.03, givers


def test_removing_a_host_moves_only_its_twins() -> None:
    before = Placement(HOSTS)
    after = before.with_hosts(h for h in HOSTS if h != "host-2")
    twin_ids = ids(50_000)
    moved = before.moves(after, twin_ids)
    held = [i for i in twin_ids if before.owner(i) == "host-2"]
    assert sorted(moved) == sorted(held)
    assert {src for src, _ in moved.values()} == {"host-2"}
    # ... and its twins spread over the survivors evenly
    takers = collections.Counter(to for _, to in moved.values())
    assert set(takers) == {"host-0", "host-1", "host-3"}
    for host in takers:
        assert abs(takers[host] / len(moved) - 1 / 3) < 0.03, takers


@given(hosts=host_sets, newcomer=host_names, twin_ids=st.lists(device_ids, max_size=50))
def test_added_host_only_takes_twins(hosts: list[str], newcomer: str, twin_ids: list[str]) -> None:
    if newcomer in hosts:
        return
    before = Placement(tuple(hosts))
    after = before.with_hosts([*hosts, newcomer])
    for twin_id in twin_ids:
        assert after.owner(twin_id) in (before.owner(twin_id), newcomer)


@given(hosts=st.lists(host_names, min_size=2, max_size=8, unique=True), data=st.data())
def test_removed_host_only_gives_twins(hosts: list[str], data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(hosts))
    twin_ids = data.draw(st.lists(device_ids, max_size=50))
    before = Placement(tuple(hosts))
    after = before.with_hosts(h for h in hosts if h != gone)
    for twin_id in twin_ids:
        owner = before.owner(twin_id)
        if owner == gone:
            assert after.owner(twin_id) != gone
        else:
            assert after.owner(twin_id) == owner


# -- moves() --------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(old=host_sets, new=host_sets, twin_ids=st.lists(device_ids, max_size=40))
def test_moves_lists_exactly_the_changed_owners(
    old: list[str], new: list[str], twin_ids: list[str]
) -> None:
    before, after = Placement(tuple(old)), Placement(tuple(new))
    expected = {
        i: (before.owner(i), after.owner(i)) for i in twin_ids if before.owner(i) != after.owner(i)
    }
    assert before.moves(after, twin_ids) == expected
    # the reverse direction moves the same twins back
    assert after.moves(before, twin_ids) == {i: (b, a) for i, (a, b) in expected.items()}


@given(hosts=host_sets, twin_ids=st.lists(device_ids, max_size=40))
def test_no_moves_for_the_same_host_set(hosts: list[str], twin_ids: list[str]) -> None:
    placement = Placement(tuple(hosts))
    assert placement.moves(placement, twin_ids) == {}
    assert placement.moves(Placement(tuple(reversed(hosts))), twin_ids) == {}


def test_moves_takes_a_generator_and_handles_no_ids() -> None:
    before = Placement(HOSTS)
    after = before.with_hosts(("host-0",))
    assert before.moves(after, []) == {}
    moved = before.moves(after, (i for i in ids(100)))
    assert moved
    assert all(src != "host-0" and to == "host-0" for src, to in moved.values())
