"""``Runtime``: the Python entry point to a twinfleet fleet (notebooks, the API, the CLI).

It starts a local Ray (or joins ``ray_address``), starts the ``TwinHost`` actors, routes device
messages to them in batches and answers queries by asking every host. Twin references are got,
never created: ``runtime.twin("pump-7")`` is a handle whether or not the twin is active.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

import ray
from ray.exceptions import RayTaskError

from twinfleet.errors import InvalidRequest
from twinfleet.models import ModelRegistry, default_registry
from twinfleet.twins import FAMILIES, TwinFilter, TwinfleetError, family_named, validate_device_id
from twinfleet.twins.alarms import rules_from_documents
from twinfleet.twins.query import TwinSelector

from .actors import spawn_host, spawn_hub, spawn_training
from .calls import HostCalls, RouterDirectory, transport_named
from .directory import HostRoster, split
from .events import Event
from .host import ALARM_RULES, MODEL_ASSIGNMENT, HostSettings
from .loop import EventLoopThread
from .messages import DeviceMessage, IngestResult
from .placement import Placement
from .router import Router, RouterSettings
from .stores import StateStore, open_store, resolve_store_url
from .training import (
    MODEL_TRAINING,
    TrainingNotFound,
    TrainingRequest,
    new_training,
    order_records,
)

__all__ = ["IngestResult", "Page", "Runtime", "RuntimeSettings", "TwinHandle"]

log = logging.getLogger(__name__)

PlacementMode = Literal["virtual", "dedicated"]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """How a runtime is laid out: host count, batching, timing."""

    hosts: int = 2
    host: HostSettings = field(default_factory=HostSettings)
    router: RouterSettings = field(default_factory=RouterSettings)
    default_placement: PlacementMode = "virtual"
    telemetry: str | None = None  # history sink URL (sqlite:///..., memory://); None: none
    transport: Literal["wire", "ray"] = "wire"  # how per-twin host calls travel (calls.py)

    def __post_init__(self) -> None:
        if self.hosts < 1:
            raise ValueError("a runtime needs at least one host")
        if self.default_placement not in ("virtual", "dedicated"):
            raise ValueError("default_placement is 'virtual' or 'dedicated'")
        if self.transport not in ("wire", "ray"):
            raise ValueError("transport is 'wire' or 'ray'")


class Page(NamedTuple):
    """One page of a twin query; pass ``next`` as ``after`` for the following page."""

    items: list[dict[str, Any]]
    next: str | None


class TwinHandle:
    """A reference to one twin; calls go to whichever host holds it."""

    __slots__ = ("_runtime", "id")

    def __init__(self, runtime: Runtime, twin_id: str) -> None:
        self._runtime = runtime
        self.id = validate_device_id(twin_id)

    def get(self) -> dict[str, Any]:
        """The twin document (``TwinNotFound`` if the twin does not exist)."""
        return self._runtime._sync(self._runtime._calls.get(self.id))

    def patch_desired(
        self, patch: Mapping[str, Any], *, expected_version: int | None = None
    ) -> dict[str, Any]:
        """Merge-patch desired state; returns once the change is durable."""
        calls = self._runtime._calls
        return self._runtime._sync(
            calls.patch_desired(self.id, patch, expected_version=expected_version)
        )

    def patch_tags(
        self, patch: Mapping[str, Any], *, expected_version: int | None = None
    ) -> dict[str, Any]:
        """Merge-patch tags; returns once the change is durable."""
        calls = self._runtime._calls
        return self._runtime._sync(
            calls.patch_tags(self.id, patch, expected_version=expected_version)
        )

    def __repr__(self) -> str:
        return f"TwinHandle({self.id!r})"


class Runtime:
    """A running fleet: hosts on Ray, a router, a registry. Use as a context manager."""

    def __init__(
        self,
        *,
        store: str = "sqlite:///.twinfleet/state.db",
        ray_address: str | None = None,
        settings: RuntimeSettings | None = None,
        namespace: str | None = None,
        ray_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings or RuntimeSettings()
        if store.startswith("memory:"):
            # Each host is a process of its own: a memory store would be one store per host.
            raise ValueError(
                "a Runtime's hosts are processes of their own and cannot share a memory:// "
                "store: use sqlite:///path.db or redis://host:port/db"
            )
        self.store_url = resolve_store_url(store)
        self._store: StateStore = open_store(self.store_url)
        self._models: ModelRegistry | None = None
        self._trainings: dict[str, Any] = {}  # job id -> the ref of its Ray task (ours only)
        self._started_ray = False
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "namespace": namespace or "twinfleet",
                **(ray_options or {}),
            }
            # "local" starts a Ray of our own rather than joining one a `ray start` left behind.
            ray.init(address=ray_address or "local", **options)
            self._started_ray = True
        names = tuple(f"host-{i}" for i in range(self.settings.hosts))
        self._hub = spawn_hub()
        self._hosts: dict[str, Any] = {name: self._spawn(name) for name in names}
        self._placement = Placement(names)
        self._dedicated: dict[str, Any] = {}
        self._owners: dict[str, Any] = {}  # device id -> host actor, a cache of the placement
        self._owners_lock = threading.Lock()
        ray.get([h.start.remote() for h in self._hosts.values()])
        self._load_dedicated()
        self._router = Router(self._owner_of, settings=self.settings.router)
        self._loop = EventLoopThread("twinfleet-calls")
        self._calls = self.calls(own_writes=True)
        self._closed = False

    # -- placement ----------------------------------------------------------------------------

    @property
    def placement(self) -> Placement:
        """The current placement of virtual twins over hosts."""
        return self._placement

    def scale(self, hosts: int) -> Placement:
        """Grow or shrink the virtual hosts to ``hosts``; returns the new placement.

        Device messages wait meanwhile. Twins whose owner changes are snapshotted and dropped by
        their old host and activated by the new one on their next message or call; rendezvous
        hashing moves only the share of the hosts added or removed.
        """
        if hosts < 1:
            raise ValueError("a runtime needs at least one host")
        with self._router.paused():
            names = tuple(f"host-{i}" for i in range(hosts))
            added = {name: self._spawn(name) for name in names if name not in self._hosts}
            self._get([h.start.remote() for h in added.values()])
            placement = Placement(names)
            kept = {n: h for n, h in self._hosts.items() if n in names}
            removed = {n: h for n, h in self._hosts.items() if n not in names}
            self._get([h.release.remote(placement) for h in kept.values()])
            self._get([h.stop.remote() for h in removed.values()])
            for host in removed.values():
                ray.kill(host, no_restart=True)
            with self._owners_lock:
                self._hosts = {**kept, **added}
                self._placement = placement
                self._owners.clear()
        log.info("runtime scaled to %d hosts", hosts)
        return placement

    def _spawn(self, host_id: str) -> Any:
        telemetry = self.settings.telemetry
        return spawn_host(
            host_id,
            store_url=self.store_url,
            settings=self.settings.host,
            hub=self._hub,
            telemetry_url=resolve_store_url(telemetry) if telemetry else None,
        )

    @property
    def router(self) -> Router:
        """The runtime's own router (its counters and queue depths)."""
        return self._router

    @property
    def hub(self) -> Any:
        """The ``EventHub`` actor every host sends its events to."""
        return self._hub

    def roster(self) -> HostRoster:
        """A picklable roster of this fleet's hosts, for gateways (or an API) running in
        processes of their own (``HostRouting(roster)`` reaches the same hosts)."""
        return HostRoster(
            hosts=tuple(self._hosts.items()),
            dedicated=tuple(self._dedicated.items()),
            hub=self._hub,
            router=self.settings.router,
        )

    def owner_of(self, twin_id: str) -> Any:
        """The host actor that holds ``twin_id`` (spawning a dedicated one if so placed)."""
        return self._owner_of(twin_id)

    def _owner_of(self, twin_id: str) -> Any:
        host = self._owners.get(twin_id)
        if host is None:
            host = self._dedicated.get(twin_id)
            if host is None:
                if self.settings.default_placement == "dedicated":
                    host = self._spawn_dedicated(twin_id)
                else:
                    host = self._hosts[self._placement.owner(twin_id)]
            if len(self._owners) < 2_000_000:
                self._owners[twin_id] = host
        return host

    def _spawn_dedicated(self, twin_id: str) -> Any:
        with self._owners_lock:
            host = self._dedicated.get(twin_id)
            if host is None:
                host = self._spawn(f"dedicated:{twin_id}")
                self._dedicated[twin_id] = host
            return host

    def _load_dedicated(self) -> None:
        after: str | None = None
        while True:
            entries = self._store.list_registry(after=after, limit=1000)
            for entry in entries:
                if entry.get("placement") == "dedicated":
                    self._spawn_dedicated(entry["id"])
            if len(entries) < 1000:
                break
            after = entries[-1]["id"]
        if self._dedicated:
            ray.get([h.start.remote() for h in self._dedicated.values()])

    def calls(self, *, own_writes: bool = False) -> HostCalls:
        """A :class:`HostCalls` over this runtime's hosts, for callers in this process (the
        API, the edges) on their own event loop, by the transport of ``settings``.

        ``own_writes``: the caller routes its device messages through this runtime's router
        (a gateway), so its reads wait for them (read-your-writes); the API routes none.
        """
        directory = RouterDirectory(
            owner_of=self._owner_of,
            virtual_hosts=self._virtual_hosts,
            dedicated_hosts=lambda: list(self._dedicated.values()),
            router=self._router if own_writes else None,
            place=self._place,
        )
        return HostCalls(directory, transport_named(self.settings.transport))

    def _virtual_hosts(self) -> tuple[Placement, list[Any]]:
        with self._owners_lock:
            return self._placement, list(self._hosts.values())

    def _place(self, device_id: str, mode: str) -> None:
        """Before registering ``device_id`` as ``dedicated``: give it an actor of its own."""
        if mode != "dedicated" or device_id in self._dedicated:
            return
        self._router.flush()  # messages already routed to a virtual host land first
        host = self._spawn_dedicated(device_id)
        ray.get(host.start.remote())
        old = self._owners.pop(device_id, None)
        if old is not None and old is not host:
            ray.get(old.passivate.remote([device_id]))

    # -- twins --------------------------------------------------------------------------------

    def twin(self, twin_id: str) -> TwinHandle:
        """A handle on twin ``twin_id`` (active or not; it need not exist yet)."""
        return TwinHandle(self, twin_id)

    def register(
        self,
        device_id: str,
        *,
        device_type: str | None = None,
        tags: Mapping[str, Any] | None = None,
        placement: PlacementMode | None = None,
    ) -> dict[str, Any]:
        """Register a device (durably) and create its twin; returns the twin document."""
        mode = placement or self.settings.default_placement
        return self._sync(
            self._calls.register(device_id, device_type=device_type, tags=tags, placement=mode)
        )

    def device(self, device_id: str) -> dict[str, Any] | None:
        """The registry entry of a device, if it was registered."""
        return self._store.get_registry(validate_device_id(device_id))

    def devices(self, *, after: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Registry entries in id order, starting after id ``after``."""
        return self._store.list_registry(after=after, limit=limit)

    def aggregate(self, by: str = "family", metric: str | None = None) -> list[dict[str, Any]]:
        """Fleet figures per family (``by="family"``) or tag value (``by="tag:site"``).

        Each group: ``twins``, ``online``, ``anomalous`` and the ``mean`` of the reported
        ``metric`` (a dotted path; over the twins that report it as a number). Every host
        answers for its active twins at once; idle twins passivated out of memory are not
        counted.
        """
        return self._sync(self._calls.aggregate(by, metric))

    # -- anomaly models ---------------------------------------------------------------------

    def models(self) -> ModelRegistry:
        """The models this process knows (built-ins and installed plugins)."""
        if self._models is None:
            self._models = default_registry()
        return self._models

    def model_assignments(self) -> list[dict[str, Any]]:
        """The model assigned to each family that has one: ``{"family", "model", "params"}``."""
        return self._store.list_items(MODEL_ASSIGNMENT)

    def assign_model(
        self, family: str, model: str | None, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Give every twin of ``family`` the model ``model`` (None: its built-in default).

        Twins with a model of their own keep it. The assignment is durable; every host takes
        it now (active twins switch, sleeping ones when they wake). Returns the assignment.
        """
        family_named(family)
        assignment: dict[str, Any] | None = None
        if model is None:
            self._store.delete_item(MODEL_ASSIGNMENT, family)
        else:
            self.models().checked(model, params)  # refuse bad names and params now
            assignment = {"family": family, "model": model, "params": dict(params or {})}
            self._store.put_item(MODEL_ASSIGNMENT, family, assignment)
        ray.get([h.set_family_model.remote(family, assignment) for h in self._all_hosts()])
        return assignment

    def set_twin_model(
        self, twin_id: str, model: str | None, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Give one twin a model of its own (None: back to its family's); the twin document."""
        return self._sync(self._calls.set_model(twin_id, model, params))

    def alarm_rules(self) -> list[dict[str, Any]]:
        """Each family's alarm rules: ``{"family", "rules": [...], "source": built-in|custom}``."""
        custom = {item["family"]: item["rules"] for item in self._store.list_items(ALARM_RULES)}
        out = []
        for name in sorted(FAMILIES):
            if name in custom:
                rules = [r.document() for r in rules_from_documents(custom[name])]
            else:
                rules = [r.document() for r in FAMILIES[name].alarm_rules]
            out.append(
                {
                    "family": name,
                    "rules": rules,
                    "source": "custom" if name in custom else "built-in",
                }
            )
        return out

    def set_alarm_rules(
        self, family: str, rules: Sequence[Mapping[str, Any]] | None
    ) -> dict[str, Any]:
        """Replace a family's alarm rules (None: back to its built-in ones), durably; every
        host judges by them at once, and alarms of rules that are gone clear. The family's
        rules as :meth:`alarm_rules` lists them."""
        family_named(family)
        if rules is None:
            self._store.delete_item(ALARM_RULES, family)
        else:
            parsed = rules_from_documents(rules)  # refuse bad rules before storing any
            plain = [dataclasses.asdict(rule) for rule in parsed]
            self._store.put_item(ALARM_RULES, family, {"family": family, "rules": plain})
            rules = plain
        ray.get([h.set_family_alarm_rules.remote(family, rules) for h in self._all_hosts()])
        return next(item for item in self.alarm_rules() if item["family"] == family)

    def train(
        self,
        *,
        family: str | None = None,
        twins: Sequence[str] = (),
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        scope: Literal["family", "twin"] = "family",
        since: float | None = None,
        until: float | None = None,
        max_twins: int = 1_000,
        wait: bool = False,
    ) -> dict[str, Any]:
        """Train a model on history as a Ray task beside the hosts; the job's record.

        ``scope="family"`` fits one model on the family's readings and assigns it to the
        family; ``scope="twin"`` fits each twin (``twins``, or the family's active ones) on its
        own readings and gives it that model. ``model`` defaults to the family's current one.
        Ingestion goes on meanwhile; the twins switch when the job is done. ``wait``: return
        the finished record instead of the running one (see also :meth:`training`).
        """
        for twin_id in twins:
            validate_device_id(twin_id)
        if family is not None:
            family_named(family)
        if model is None:
            if family is None:
                raise InvalidRequest("name a model to train for these twins", field="model")
            current = self._store.get_item(MODEL_ASSIGNMENT, family)
            model = current["model"] if current else family_named(family).default_model
            params = current.get("params", {}) if current and params is None else params
        request = TrainingRequest(
            model=model,
            params=dict(params or {}),
            family=family,
            twins=tuple(twins),
            scope=scope,
            since=since,
            until=until,
            max_twins=max_twins,
        )
        record = new_training(self._store, self.models(), request)
        ref = spawn_training(
            record["id"], request, hosts=tuple(self._hosts.items()), store_url=self.store_url
        )
        self._trainings[record["id"]] = ref
        if wait:
            ray.get(ref)
            return self.training(record["id"])
        return record

    def training(self, job_id: str) -> dict[str, Any]:
        """The record of training job ``job_id`` (status running, succeeded or failed)."""
        record = self._store.get_item(MODEL_TRAINING, job_id)
        if record is None:
            raise TrainingNotFound(f"no training job {job_id!r}", field="id")
        ref = self._trainings.get(job_id)
        if record["status"] == "running" and ref is not None:
            ready, _ = ray.wait([ref], timeout=0)
            if ready:
                try:
                    ray.get(ref)
                except Exception as err:  # the task itself died (its worker killed, say)
                    record.update(status="failed", error=f"the training task died: {err}")
                    self._store.put_item(MODEL_TRAINING, job_id, record)
                else:
                    record = self._store.get_item(MODEL_TRAINING, job_id) or record
        return record

    def trainings(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Training jobs, newest first."""
        return order_records(self._store.list_items(MODEL_TRAINING))[:limit]

    def set_lifecycle(self, device_id: str, state: str) -> dict[str, Any]:
        """Suspend (``suspended``), resume (``active``) or retire (``decommissioned``) a device;
        its messages are refused unless it is active (or newly registered)."""
        entry = self.device(device_id) or {"id": device_id, "placement": "virtual"}
        return self._sync(self._calls.set_lifecycle(device_id, state, registry=entry))

    def ingest(self, messages: Iterable[DeviceMessage | Sequence[Any]]) -> IngestResult:
        """Hand device messages to their hosts in batches; returns once they are queued.

        A message is a :class:`DeviceMessage` or a tuple in its field order. Malformed ones
        are rejected here; per-twin errors (limits) surface in ``stats()['recent_rejections']``.
        """
        good, rejected = split(messages)
        self._router.route(good)
        return IngestResult(len(good), tuple(rejected))

    def send_command(
        self,
        device_id: str,
        name: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_s: float = 10.0,
        ttl_s: float = 3600.0,
    ) -> dict[str, Any]:
        """Send a command; returns its record once the device answered or ``timeout_s`` passed.

        The command is durable before delivery; an offline device gets it when it comes back,
        unless ``ttl_s`` runs out first (status ``expired``).
        """
        request = {
            "name": name,
            "params": dict(params or {}),
            "timeout_s": timeout_s,
            "ttl_s": ttl_s,
        }
        return self._sync(self._calls.send_command(device_id, request))

    def command(self, device_id: str, command_id: str) -> dict[str, Any]:
        """The record of a command sent earlier."""
        return self._sync(self._calls.get_command(device_id, command_id))

    def events(
        self,
        *,
        after: int = 0,
        types: Sequence[str] | None = None,
        twin_id: str | None = None,
        timeout: float = 0.0,
        limit: int = 1000,
    ) -> list[Event]:
        """Events with id > ``after``, waiting up to ``timeout`` s for the first one."""
        self.flush()
        self._get([h.send_events.remote() for h in self._all_hosts()])
        events: list[Event] = self._get(
            self._hub.poll.remote(after, types=types, twin_id=twin_id, timeout=timeout, limit=limit)
        )
        return events

    def flush_twin(self, twin_id: str) -> None:
        """Wait until the messages routed so far to this twin's host are applied."""
        self._router.flush(self.owner_of(twin_id))

    def flush(self) -> None:
        """Wait until every message ingested so far is applied by its twin."""
        self._router.flush()

    def persist(self) -> int:
        """Flush messages, then write every dirty twin's snapshot now; return how many."""
        self.flush()
        return sum(ray.get([h.flush.remote() for h in self._all_hosts()]))

    def query(
        self,
        flt: TwinSelector | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
        **criteria: Any,
    ) -> Page:
        """Twins matching a filter (or the ``TwinFilter`` fields as keywords), in id order."""
        if flt is None:
            flt = TwinFilter(**criteria)
        elif criteria:
            raise TypeError("pass either a TwinFilter or keyword criteria, not both")
        return Page(*self._sync(self._calls.query(flt, after=after, limit=limit)))

    def twins(
        self, flt: TwinSelector | None = None, *, page_size: int = 500, **criteria: Any
    ) -> Iterator[dict[str, Any]]:
        """Every twin matching the filter, page by page."""
        after: str | None = None
        while True:
            page = self.query(flt, after=after, limit=page_size, **criteria)
            yield from page.items
            if page.next is None:
                return
            after = page.next

    def activate(self, ids: Sequence[str]) -> int:
        """Load these twins into their hosts now; return how many are active after."""
        by_host: dict[Any, list[str]] = {}
        for twin_id in ids:
            by_host.setdefault(self._owner_of(twin_id), []).append(twin_id)
        return sum(self._get([h.activate.remote(chunk) for h, chunk in by_host.items()]))

    def stats(self) -> dict[str, Any]:
        """Per-host counters and the router's totals."""
        hosts = self._get([h.stats.remote() for h in self._hosts.values()])
        dedicated = self._get([h.stats.remote() for h in self._dedicated.values()])
        router = self._router
        return {
            "hosts": hosts,
            "dedicated": len(dedicated),
            "dedicated_hosts": dedicated,
            "active": sum(h["active"] for h in hosts) + sum(d["active"] for d in dedicated),
            "anomalous": sum(h["anomalous"] for h in (*hosts, *dedicated)),
            "online": sum(h["online"] for h in (*hosts, *dedicated)),
            "applied": router.applied,
            "stale": router.stale,
            "rejected": router.rejected,
            "failed": router.failed,
            "batches": router.batches,
            "recent_rejections": list(router.recent_rejections)[-20:],
        }

    # -- plumbing -----------------------------------------------------------------------------

    def _all_hosts(self) -> list[Any]:
        return [*self._hosts.values(), *self._dedicated.values()]

    def _sync(self, call: Coroutine[Any, Any, _T]) -> _T:
        """Run a host call on the runtime's event loop thread and wait for its answer."""
        return self._loop.run(call)

    @staticmethod
    def _get(refs: Any) -> Any:
        """``ray.get`` that raises twinfleet's own errors as themselves."""
        try:
            return ray.get(refs)
        except RayTaskError as err:
            cause = err.cause
            if isinstance(cause, TwinfleetError):
                raise cause from None
            raise

    def close(self) -> None:
        """Apply queued messages, flush every host's state, stop the hosts (and Ray if ours)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._router.close()
            self._loop.run(self._calls.close())
            self._loop.stop()
            ray.get([h.stop.remote() for h in self._all_hosts()])
        finally:
            for host in self._all_hosts():
                ray.kill(host, no_restart=True)
            ray.kill(self._hub, no_restart=True)
            self._store.close()
            if self._started_ray:
                ray.shutdown()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
