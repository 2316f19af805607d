"""``TwinHost``: many virtual twins in one process, as plain (Ray-free) logic.

A host activates a twin on its first message or call (loading its snapshot), applies messages
one at a time per twin, commits application writes (desired, tags, registry) to the state store
before answering, snapshots reported and model state write-behind (dirty twins only, in
batches), sweeps presence, and passivates idle twins. ``runtime/actors.py`` turns it into a Ray
actor; unit tests drive it directly.

Concurrency: all methods run on one asyncio loop. Twin state only changes between awaits, so
each twin sees one message at a time. Store calls run on one worker thread, in order, so a
write-behind snapshot can never overtake a later commit of the same twin.

The parts, one job each, sharing the active twins through one :class:`Residents`:

- ``activation``: :class:`Activation` loads and creates twins, and passivates them;
- ``applier``: :class:`MessageApplier` applies device message batches (the hot path);
- ``sequencing``: :class:`BatchSequencer` puts each router's batches back in order;
- ``writes``: :class:`TwinWrites` makes application writes durable, through a
  :class:`GroupCommit`, and undoes those that fail;
- ``ledger``: :class:`CallLedger` answers a resent call once (``call_id``);
- ``models`` and ``alarms``: which model and alarm rules a family's twins get;
- ``history``: :class:`HistoryBuffer`, telemetry history on its way to the sink and back;
- ``commands``, ``queries``, ``writebehind``, ``sweeps``, ``delays``, ``outbox``: commands and
  their waiters, queries and aggregates, snapshots of dirty twins, presence and idleness,
  message delays, events;
- ``twin_host``: :class:`TwinHost` composes them behind the methods callers call by name.
"""

from __future__ import annotations

from .activation import Activation
from .alarms import ALARM_RULES, AlarmPolicy
from .applier import MessageApplier
from .commands import Commands
from .delays import DelaySamples
from .history import HistoryBuffer
from .ledger import CallLedger
from .models import MODEL_ASSIGNMENT, ModelPolicy
from .outbox import Outbox
from .queries import Queries, QueryPage
from .residents import Residents
from .sequencing import BatchSequencer
from .settings import HostSettings
from .sweeps import Sweeper
from .twin_host import TwinHost
from .writebehind import WriteBehind
from .writes import GroupCommit, TwinWrites, desired_document

__all__ = [
    "ALARM_RULES",
    "MODEL_ASSIGNMENT",
    "Activation",
    "AlarmPolicy",
    "BatchSequencer",
    "CallLedger",
    "Commands",
    "DelaySamples",
    "GroupCommit",
    "HistoryBuffer",
    "HostSettings",
    "MessageApplier",
    "ModelPolicy",
    "Outbox",
    "Queries",
    "QueryPage",
    "Residents",
    "Sweeper",
    "TwinHost",
    "TwinWrites",
    "WriteBehind",
    "desired_document",
]
