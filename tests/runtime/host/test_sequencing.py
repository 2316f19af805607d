"""Batch sequencing without Ray: each router's numbered batches, applied in its order."""

from __future__ import annotations

import asyncio
import logging
import pickle
from collections.abc import Sequence

import pytest
from helpers import eventually, settle

from twinfleet.runtime.host import BatchSequencer, HostSettings, TwinHost
from twinfleet.runtime.messages import ApplyResult, DeviceMessage
from twinfleet.runtime.stores import MemoryStore

T0 = 1_700_000_000.0
QUIET = HostSettings(flush_interval_s=3600.0, sweep_interval_s=3600.0)
LONG = 60.0  # an order timeout no test waits for: a batch that goes did not time out
SHORT = 0.01  # an order timeout a test does wait for


class Batches:
    """Batches going through one sequencer, and the order they went in."""

    def __init__(self, sequencer: BatchSequencer) -> None:
        self.sequencer = sequencer
        self.applied: list[tuple[str, int]] = []
        self.tasks: list[asyncio.Task[None]] = []

    def arrive(self, sender: str, seq: int, first: int = 0) -> asyncio.Task[None]:
        """Batch ``seq`` of ``sender`` arrives (``first``: the sender's oldest unanswered)."""

        async def run() -> None:
            async with self.sequencer.turn(sender, seq, first):
                await asyncio.sleep(0)  # applying takes a while: others may be let in meanwhile
                self.applied.append((sender, seq))

        task = asyncio.create_task(run())
        self.tasks.append(task)
        return task

    async def done(self) -> list[tuple[str, int]]:
        """Wait for every batch that arrived; the order they were applied in."""
        await asyncio.gather(*self.tasks)
        return self.applied


async def test_batches_arriving_in_order_go_at_once(no_ray: None) -> None:
    batches = Batches(BatchSequencer(timeout_s=LONG))
    for seq in range(3):
        await batches.arrive("r", seq)
    assert batches.applied == [("r", 0), ("r", 1), ("r", 2)]
    assert batches.sequencer.next_turn("r") == 3


async def test_batches_arriving_out_of_order_are_applied_in_order(no_ray: None) -> None:
    batches = Batches(BatchSequencer(timeout_s=LONG))
    batches.arrive("r", 3)
    batches.arrive("r", 1)
    batches.arrive("r", 2)
    await settle()
    assert batches.applied == []  # all wait for batch 0
    batches.arrive("r", 0)
    assert await batches.done() == [("r", 0), ("r", 1), ("r", 2), ("r", 3)]
    assert batches.sequencer.next_turn("r") == 4


async def test_a_batch_holds_its_turn_until_it_is_applied(no_ray: None) -> None:
    sequencer = BatchSequencer(timeout_s=LONG)
    release = asyncio.Event()
    order: list[str] = []

    async def slow_first() -> None:
        async with sequencer.turn("r", 0, 0):
            order.append("0 starts")
            await release.wait()
            order.append("0 ends")

    async def second() -> None:
        async with sequencer.turn("r", 1, 0):
            order.append("1")

    tasks = [asyncio.create_task(slow_first()), asyncio.create_task(second())]
    await settle()
    assert order == ["0 starts"]
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["0 starts", "0 ends", "1"]


async def test_a_failed_batch_still_ends_its_turn(no_ray: None) -> None:
    sequencer = BatchSequencer(timeout_s=LONG)
    batches = Batches(sequencer)
    batches.arrive("r", 1)
    with pytest.raises(ValueError, match="bad batch"):
        async with sequencer.turn("r", 0, 0):
            raise ValueError("bad batch")
    assert await batches.done() == [("r", 1)]


async def test_a_missing_batch_is_given_up_on_after_the_order_timeout(
    no_ray: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="twinfleet.runtime.host.sequencing")
    batches = Batches(BatchSequencer(timeout_s=SHORT, host_id="h"))
    batches.arrive("router-1", 1)  # batch 0 was lost on the way
    await eventually(lambda: batches.applied == [("router-1", 1)], what="batch 1 applied")
    (warning,) = caplog.records
    assert "batch 1 of router router-1 waited" in warning.getMessage()
    assert "for batch 0" in warning.getMessage()
    # Numbering goes on after the skipped batch; the straggler, if it comes, goes at once.
    assert batches.sequencer.next_turn("router-1") == 2
    batches.arrive("router-1", 2)
    batches.arrive("router-1", 0)
    assert await batches.done() == [("router-1", 1), ("router-1", 2), ("router-1", 0)]
    assert len(caplog.records) == 1  # neither waited


async def test_a_restarted_router_counts_from_zero_beside_the_old_one(no_ray: None) -> None:
    batches = Batches(BatchSequencer(timeout_s=LONG))
    for seq in range(5):
        batches.arrive("old", seq)
    await batches.done()
    # A router that restarts names itself afresh: its numbering starts again at 0.
    batches.arrive("new", 1)
    await settle()
    assert batches.applied[5:] == []
    batches.arrive("new", 0)
    assert (await batches.done())[5:] == [("new", 0), ("new", 1)]
    assert batches.sequencer.next_turn("old") == 5
    assert batches.sequencer.next_turn("new") == 2


async def test_a_sender_numbering_from_zero_again_is_never_held_up(no_ray: None) -> None:
    batches = Batches(BatchSequencer(timeout_s=LONG))
    for seq in range(5):
        batches.arrive("r", seq)
    await batches.done()
    for seq in range(3):  # numbers it has seen already: nothing to wait for
        await batches.arrive("r", seq)
    assert batches.applied[5:] == [("r", 0), ("r", 1), ("r", 2)]
    assert batches.sequencer.next_turn("r") == 5


async def test_a_restarted_host_starts_counting_at_the_oldest_unanswered_batch(
    no_ray: None,
) -> None:
    # The router's batches 0-4 were answered before the host restarted; 5 and 6 were in flight.
    batches = Batches(BatchSequencer(timeout_s=LONG))
    batches.arrive("r", 6, first=5)
    await settle()
    assert batches.applied == []  # waits for 5, not for 0
    batches.arrive("r", 5, first=5)
    assert await batches.done() == [("r", 5), ("r", 6)]


async def test_routers_are_sequenced_independently(no_ray: None) -> None:
    batches = Batches(BatchSequencer(timeout_s=LONG))
    batches.arrive("a", 1)  # waits for a's batch 0
    batches.arrive("b", 1)
    batches.arrive("b", 0)
    await settle()
    assert batches.applied == [("b", 0), ("b", 1)]  # a's gap holds up only a
    batches.arrive("a", 0)
    assert (await batches.done())[2:] == [("a", 0), ("a", 1)]


# -- through the host -------------------------------------------------------------------------


class RecordingHost(TwinHost):
    """A host that remembers the batches it applied, in order (by their first reading)."""

    def __init__(self, settings: HostSettings) -> None:
        super().__init__("h", MemoryStore(), settings=settings, clock=lambda: T0)
        self.batches: list[float] = []

    async def apply(self, messages: Sequence[DeviceMessage]) -> ApplyResult:
        """Record the batch, then apply it."""
        self.batches.append(messages[0][2]["n"])
        return await super().apply(messages)


def packed(n: int) -> bytes:
    """A router's pickled batch: one reading ``n`` of twin ``s-1``."""
    message = DeviceMessage("s-1", "telemetry", {"n": float(n)}, T0 - 100 + n, "mqtt")
    return pickle.dumps([tuple(message)], protocol=pickle.HIGHEST_PROTOCOL)


async def test_apply_packed_applies_a_routers_batches_in_its_order(no_ray: None) -> None:
    host = RecordingHost(QUIET)
    try:
        late = [
            asyncio.create_task(host.apply_packed(packed(n), sender="r", seq=n, first=0))
            for n in (2, 1)
        ]
        await settle()
        assert host.batches == []
        first = await host.apply_packed(packed(0), sender="r", seq=0, first=0)
        results = [first, *await asyncio.gather(*late)]
        assert host.batches == [0.0, 1.0, 2.0]
        assert [r.applied for r in results] == [1, 1, 1]
        assert (await host.get("s-1"))["reported"] == {"n": 2.0}
    finally:
        await host.stop()


async def test_apply_packed_gives_up_on_a_lost_batch(no_ray: None) -> None:
    host = RecordingHost(HostSettings(flush_interval_s=3600, order_timeout_s=SHORT))
    try:
        result = await host.apply_packed(packed(1), sender="r", seq=1, first=0)
        assert result.applied == 1
        assert host.batches == [1.0]
    finally:
        await host.stop()


async def test_apply_packed_without_a_number_is_not_sequenced(no_ray: None) -> None:
    host = RecordingHost(QUIET)
    try:
        waiting = asyncio.create_task(host.apply_packed(packed(1), sender="r", seq=1, first=0))
        await host.apply_packed(packed(5))  # seq -1: not a router's numbered batch
        assert host.batches == [5.0]
        await host.apply_packed(packed(0), sender="r", seq=0, first=0)
        await waiting
        assert host.batches == [5.0, 0.0, 1.0]
    finally:
        await host.stop()
