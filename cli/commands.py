"""The ``twins``, ``devices``, ``tokens``, ``models`` and ``alarms`` commands: a running
platform, through :class:`~twinfleet.client.TwinClient`.

Every command takes ``--url``, ``--token`` (default: ``<data-dir>/admin.token``) and ``--json``,
and exits with a code that says what happened (see :data:`EXIT_CODES`).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click
import httpx
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Column, Table

from twinfleet.client import (
    ApiError,
    CommandResult,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    ServiceUnavailable,
    TwinClient,
    Unauthorized,
)
from twinfleet.twins import ALARM_STATES

__all__ = ["EXIT_CODES", "alarms", "devices", "models", "tokens", "twins"]

OK, FAILED, USAGE, ACCEPTED, NOT_FOUND, AUTH, CONFLICT, UNAVAILABLE = 0, 1, 2, 3, 4, 5, 6, 7

EXIT_CODES: Final = f"""\b
Exit codes:
  {OK}  ok
  {FAILED}  a failed command (or another API error)
  {USAGE}  usage error: bad option, JSON or request
  {ACCEPTED}  a command was accepted but is not final yet
  {NOT_FOUND}  not found
  {AUTH}  authentication or permission error (401/403, no token)
  {CONFLICT}  conflict or precondition (409/412/428)
  {UNAVAILABLE}  server unavailable or unreachable
"""

# The one place an API error chooses the exit code; anything else is FAILED.
_EXITS: Final[tuple[tuple[type[ApiError], int], ...]] = (
    (NotFound, NOT_FOUND),
    (Unauthorized, AUTH),
    (Forbidden, AUTH),
    (Conflict, CONFLICT),
    (PreconditionFailed, CONFLICT),
    (PreconditionRequired, CONFLICT),
    (ServiceUnavailable, UNAVAILABLE),
    (InvalidRequest, USAGE),
)


class CliFailure(Exception):
    """An outcome that ends the command with ``exit_code`` and a one-line message."""

    def __init__(self, exit_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.code = code
        self.message = message


@contextmanager
def _exit_codes() -> Iterator[None]:
    """Turn the client's errors into ``twinfleet: <code>: <message>`` on stderr and an exit."""
    try:
        yield
    except ApiError as error:
        exit_code = next((c for kind, c in _EXITS if isinstance(error, kind)), FAILED)
        where = f" ({error.field})" if error.field else ""
        _fail(exit_code, error.code, f"{error.message}{where} [HTTP {error.status}]")
    except httpx.TransportError as error:
        _fail(UNAVAILABLE, "unavailable", f"{type(error).__name__}: {error}")
    except CliFailure as failure:
        _fail(failure.exit_code, failure.code, failure.message)


def _fail(exit_code: int, code: str, message: str) -> None:
    click.echo(f"twinfleet: {code}: {message}", err=True)
    raise SystemExit(exit_code)


@dataclass(frozen=True, slots=True)
class Connection:
    """Where the platform is, who we are, and how to print."""

    url: str
    token: str | None
    data_dir: Path
    as_json: bool

    def client(self) -> TwinClient:
        """A client of the platform, with ``--token`` or the admin token of ``--data-dir``."""
        token = self.token
        if not token:
            path = self.data_dir / "admin.token"
            try:
                token = path.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise CliFailure(
                    AUTH, "no_token", f"no --token, TWINFLEET_TOKEN or readable {path}: {error}"
                ) from None
        return TwinClient(self.url, token)

    def show(self, value: Any, human: Callable[[], None] | None = None) -> None:
        """Print ``value`` as JSON (``--json``, or when there is no human form), else ``human``."""
        if self.as_json or human is None:
            click.echo(json.dumps(value, indent=None if self.as_json else 2, default=str))
        else:
            human()


_COMMON: Final = (
    click.option(
        "--url",
        default="http://127.0.0.1:8000",
        show_default=True,
        envvar="TWINFLEET_URL",
        help="Base URL of the platform's HTTP API.",
    ),
    click.option(
        "--token",
        envvar="TWINFLEET_TOKEN",
        help="Bearer token (default: the one in <data-dir>/admin.token).",
    ),
    click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(".twinfleet"),
        show_default=True,
        envvar="TWINFLEET_DATA_DIR",
        help="Where `twinfleet up` wrote admin.token.",
    ),
    click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
)


def _platform(command: Callable[..., None]) -> Callable[..., None]:
    """Add the common options; the command gets a :class:`Connection` first, errors mapped."""

    @functools.wraps(command)
    def run(url: str, token: str | None, data_dir: Path, as_json: bool, **kwargs: Any) -> None:
        with _exit_codes():
            command(Connection(url, token, data_dir, as_json), **kwargs)

    for option in reversed(_COMMON):
        run = option(run)
    return run


def _json_object(value: str, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint=what) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("expected a JSON object", param_hint=what)
    return parsed


def _tags(values: tuple[str, ...]) -> dict[str, str]:
    pairs = [v.partition(":") for v in values]
    if any(not sep or not key for key, sep, _ in pairs):
        raise click.BadParameter("expected key:value", param_hint="--tag")
    return {key: value for key, _, value in pairs}


def _table(title: str, columns: tuple[str | Column, ...], rows: list[tuple[Any, ...]]) -> None:
    table = Table(*columns, title=title, title_justify="left")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    Console().print(table)


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "" if ts is None else str(ts)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


# -- twins --------------------------------------------------------------------------------------


@click.group(epilog=EXIT_CODES)
def twins() -> None:
    """Read, change, command and watch twins of a running platform."""


def _twin_row(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    reported = doc.get("reported") or {}
    shown = ", ".join(f"{k}={v}" for k, v in list(reported.items())[:3])
    more = " …" if len(reported) > 3 else ""
    return (
        doc.get("id"),
        doc.get("type"),
        (doc.get("connectivity") or {}).get("online"),
        (doc.get("anomaly") or {}).get("anomalous"),
        doc.get("version"),
        shown + more,
    )


@twins.command("list")
@click.option("--filter", "expr", metavar="EXPR", help='e.g. "reported.temperature > 30".')
@click.option("--type", "twin_type", help="Only twins of this device type.")
@click.option("--tag", "tags", multiple=True, metavar="KEY:VALUE", help="Only twins with tag.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--all", "every", is_flag=True, help="Page through every matching twin.")
@_platform
def twins_list(
    conn: Connection,
    *,
    expr: str | None,
    twin_type: str | None,
    tags: tuple[str, ...],
    limit: int,
    every: bool,
) -> None:
    """List twins (one page, or --all of them)."""
    query: dict[str, Any] = {"type": twin_type, "tags": _tags(tags) or None, "filter": expr}
    with conn.client() as fleet:
        if every:
            items: list[dict[str, Any]] = []
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                console=Console(stderr=True),
                transient=True,
                disable=conn.as_json,
            ) as progress:
                task = progress.add_task("fetching twins", total=None)
                for doc in fleet.iter_twins(**query, limit=limit):
                    items.append(doc)
                    progress.update(task, description=f"fetched {len(items)} twins")
            following = None
        else:
            items, following = fleet.twins(**query, limit=limit)
    rows = [_twin_row(doc) for doc in items]
    title = f"{len(items)} twins" + (" (more: --all)" if following else "")
    columns = ("id", "type", "online", "anomalous", "version", "reported")
    conn.show({"items": items, "next": following}, lambda: _table(title, columns, rows))


@twins.command("get")
@click.argument("twin_id")
@_platform
def twins_get(conn: Connection, twin_id: str) -> None:
    """Print a twin's document."""
    with conn.client() as fleet:
        conn.show(fleet.twin(twin_id))


@twins.command("desired")
@click.argument("twin_id")
@click.argument("patch")
@click.option("--if-match", type=int, metavar="VERSION", help="Only if the twin is at VERSION.")
@_platform
def twins_desired(conn: Connection, twin_id: str, patch: str, if_match: int | None) -> None:
    """Merge-patch a twin's desired state: twins desired pump-7 '{"interval": 5}'."""
    body = _json_object(patch, "PATCH")
    with conn.client() as fleet:
        conn.show(fleet.patch_desired(twin_id, body, expected_version=if_match))


@twins.command("tags")
@click.argument("twin_id")
@click.argument("patch")
@click.option("--if-match", type=int, metavar="VERSION", help="Only if the twin is at VERSION.")
@_platform
def twins_tags(conn: Connection, twin_id: str, patch: str, if_match: int | None) -> None:
    """Merge-patch a twin's tags: twins tags pump-7 '{"site": "plant-a"}'."""
    body = _json_object(patch, "PATCH")
    with conn.client() as fleet:
        conn.show(fleet.patch_tags(twin_id, body, expected_version=if_match))


@twins.command("command")
@click.argument("twin_id")
@click.argument("name")
@click.option("--params", default="{}", metavar="JSON", help="The command's parameters.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the device's answer.",
)
@click.option(
    "--ttl",
    type=click.FloatRange(min=0),
    default=3600.0,
    show_default=True,
    help="Seconds the command may wait for the device.",
)
@_platform
def twins_command(
    conn: Connection, *, twin_id: str, name: str, params: str, timeout: float, ttl: float
) -> None:
    """Send a command; exit 0 if it succeeded, 1 if it failed, 3 if it is not final yet."""
    body = _json_object(params, "--params")
    with conn.client() as fleet:
        result = fleet.send_command(twin_id, name, body, timeout_s=timeout, ttl_s=ttl)
    conn.show(dict(result.record))
    raise SystemExit(_command_exit(result))


def _command_exit(result: CommandResult) -> int:
    if result.status == "succeeded":
        return OK
    return ACCEPTED if result.status in {"queued", "sent"} else FAILED


@twins.command("watch")
@click.option("--type", "types", multiple=True, help="Only events of this type (repeatable).")
@click.option("--twin", "twin_id", help="Only events of this twin.")
@click.option("--max-events", type=click.IntRange(min=1), help="Stop after N events.")
@_platform
def twins_watch(
    conn: Connection, types: tuple[str, ...], twin_id: str | None, max_events: int | None
) -> None:
    """Print events as they happen, until Ctrl-C (or --max-events)."""
    seen = 0
    with conn.client() as fleet:
        try:
            for event in fleet.events(types=types or None, twin=twin_id):
                if conn.as_json:
                    line = {"id": event.id, "type": event.type, "twin_id": event.twin_id}
                    click.echo(json.dumps({**line, "ts": event.ts, "data": event.data}))
                else:
                    data = json.dumps(event.data, default=str)
                    click.echo(f"{event.id} {event.ts:.3f} {event.type} {event.twin_id} {data}")
                seen += 1
                if max_events is not None and seen >= max_events:
                    return
        except KeyboardInterrupt:
            return


# -- devices ------------------------------------------------------------------------------------


@click.group(epilog=EXIT_CODES)
def devices() -> None:
    """Register devices and manage their lifecycle on a running platform."""


@devices.command("register")
@click.argument("device_id")
@click.option("--type", "device_type", help="The device family, e.g. smart-sensor.")
@click.option("--tags", default="{}", metavar="JSON", help="Initial tags.")
@_platform
def devices_register(conn: Connection, device_id: str, device_type: str | None, tags: str) -> None:
    """Register a device (exit 6 if it is registered already)."""
    body = _json_object(tags, "--tags")
    with conn.client() as fleet:
        conn.show(fleet.register_device(device_id, device_type=device_type, tags=body))


@devices.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--cursor", help="Start after this device id.")
@_platform
def devices_list(conn: Connection, limit: int, cursor: str | None) -> None:
    """List registered devices, a page at a time."""
    with conn.client() as fleet:
        page = fleet.devices(limit=limit, cursor=cursor)
    columns = ("id", "type", "lifecycle", "placement", "tags")
    rows = [tuple(entry.get(c) for c in columns) for entry in page["items"]]
    title = f"{len(rows)} devices" + (f" (more: --cursor {page['next']})" if page["next"] else "")
    conn.show(page, lambda: _table(title, columns, rows))


@devices.command("get")
@click.argument("device_id")
@_platform
def devices_get(conn: Connection, device_id: str) -> None:
    """Print a device's registry entry."""
    with conn.client() as fleet:
        conn.show(fleet.device(device_id))


def _lifecycle_command(action: str, summary: str) -> None:
    @devices.command(action, help=summary)
    @click.argument("device_id")
    @_platform
    def move(conn: Connection, device_id: str) -> None:
        with conn.client() as fleet:
            conn.show(fleet.move_device(device_id, action))


_lifecycle_command("suspend", "Suspend a device: its messages are refused until resumed.")
_lifecycle_command("resume", "Resume a suspended device.")
_lifecycle_command("decommission", "Retire a device for good.")


# -- tokens -------------------------------------------------------------------------------------


@click.group(epilog=EXIT_CODES)
def tokens() -> None:
    """Create, list and revoke API tokens (admin only)."""


@tokens.command("create")
@click.argument(
    "role", type=click.Choice(["admin", "operator", "developer", "data-scientist", "viewer"])
)
@click.option("--name", default="", help="What the token is for.")
@_platform
def tokens_create(conn: Connection, role: str, name: str) -> None:
    """Create a token; the token itself is shown this once."""
    with conn.client() as fleet:
        record = fleet.create_token(role, name=name)
    conn.show(record, lambda: click.echo(f"{record['id']} {role}: {record['token']}"))


@tokens.command("list")
@_platform
def tokens_list(conn: Connection) -> None:
    """List tokens (without secrets)."""
    with conn.client() as fleet:
        items = fleet.tokens()
    columns = ("id", "role", "name", "created")
    rows = [
        (item.get("id"), item.get("role"), item.get("name"), _when(item.get("created")))
        for item in items
    ]
    conn.show(items, lambda: _table(f"{len(rows)} tokens", columns, rows))


@tokens.command("revoke")
@click.argument("token_id")
@_platform
def tokens_revoke(conn: Connection, token_id: str) -> None:
    """Revoke a token."""
    with conn.client() as fleet:
        fleet.revoke_token(token_id)
    conn.show({"revoked": token_id}, lambda: click.echo(f"revoked {token_id}"))


# -- models -------------------------------------------------------------------------------------


@click.group(epilog=EXIT_CODES)
def models() -> None:
    """List anomaly models and assign them to device families or twins."""


@models.command("list")
@_platform
def models_list(conn: Connection) -> None:
    """The installed models, and the model assigned to each family."""
    with conn.client() as fleet:
        listed = fleet.models()
        assigned = fleet.model_assignments()
    by_model: dict[str, list[str]] = {}
    for item in assigned:
        by_model.setdefault(item["model"], []).append(item["family"])
    columns = ("model", "version", "parameters", "assigned to", "description")
    rows = [
        (
            m["name"],
            m["version"],
            json.dumps(m["params"]),
            ", ".join(by_model.get(m["name"], [])),
            m["description"],
        )
        for m in listed["items"]
    ]

    def human() -> None:
        _table(f"{len(rows)} models", columns, rows)
        for plugin, why in listed["errors"].items():
            click.echo(f"plugin {plugin} not loaded: {why}", err=True)

    conn.show({**listed, "assignments": assigned}, human)


@models.command("assign")
@click.argument("family")
@click.argument("model")
@click.option("--params", default="{}", metavar="JSON", help="The model's parameters.")
@_platform
def models_assign(conn: Connection, family: str, model: str, params: str) -> None:
    """Give every twin of FAMILY the model MODEL ('default' for the built-in default)."""
    values = _json_object(params, "--params")
    with conn.client() as fleet:
        result = fleet.assign_model(family, None if model == "default" else model, values)
    conn.show(
        result or {"family": family, "model": None},
        lambda: click.echo(f"{family}: {model} {json.dumps(values) if values else ''}".rstrip()),
    )


@models.command("set")
@click.argument("twin_id")
@click.argument("model")
@click.option("--params", default="{}", metavar="JSON", help="The model's parameters.")
@_platform
def models_set(conn: Connection, twin_id: str, model: str, params: str) -> None:
    """Give one twin the model MODEL of its own ('family' to follow its family again)."""
    values = _json_object(params, "--params")
    with conn.client() as fleet:
        doc = fleet.set_twin_model(twin_id, None if model == "family" else model, values)
    anomaly = doc["anomaly"]
    conn.show(
        doc,
        lambda: click.echo(f"{twin_id}: {anomaly['model']} ({anomaly['source']})"),
    )


@models.command("train")
@click.option("--family", help="Train on this family's history.")
@click.option("--twin", "twins", multiple=True, help="Train on this twin's history (repeatable).")
@click.option("--model", help="The model to train (default: the family's current model).")
@click.option("--params", default=None, metavar="JSON", help="The model's parameters.")
@click.option(
    "--scope",
    type=click.Choice(["family", "twin"]),
    default="family",
    show_default=True,
    help="One model for the family, or one per twin on its own history.",
)
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="History used: the last HOURS.",
)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the job to end.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds to wait.",
)
@_platform
def models_train(  # noqa: PLR0917 - click passes every option by name
    conn: Connection,
    family: str | None,
    twins: tuple[str, ...],
    model: str | None,
    params: str | None,
    scope: str,
    hours: float,
    wait: bool,
    timeout: float,
) -> None:
    """Train a model on history beside the running twins, then swap it in.

    Exits 1 if the job fails (the reason is printed), 3 if it is still running.
    """
    values = _json_object(params, "--params") if params is not None else None
    with conn.client() as fleet:
        job = fleet.train(
            family=family, twins=twins, model=model, params=values, scope=scope, hours=hours
        )
        deadline = time.monotonic() + timeout
        while wait and job["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
            job = fleet.training(job["id"])

    def human() -> None:
        what = f"{job['model']} on {job['family'] or ', '.join(job['twins'])} ({job['scope']})"
        click.echo(f"training {job['id']}: {what}: {job['status']}")
        if job["status"] == "succeeded":
            click.echo(
                f"version {job['version']}: {job['twins_trained']} twins trained on "
                f"{job['readings']} readings in {job['seconds']:.1f} s"
            )
        for twin_id, why in job.get("skipped", {}).items():
            click.echo(f"skipped {twin_id}: {why}", err=True)
        if job["error"]:
            click.echo(f"failed: {job['error']}", err=True)

    conn.show(job, human)
    if job["status"] != "succeeded":
        raise SystemExit(FAILED if job["status"] == "failed" else ACCEPTED)


@models.command("trainings")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@_platform
def models_trainings(conn: Connection, limit: int) -> None:
    """Training jobs, newest first."""
    with conn.client() as fleet:
        jobs = fleet.trainings(limit=limit)
    columns = (Column("job", no_wrap=True), "model", "on", "scope", "status", "twins", "readings")
    rows = [
        (
            j["id"],
            j["model"],
            j["family"] or ", ".join(j["twins"]),
            j["scope"],
            j["status"] if not j["error"] else f"{j['status']}: {j['error']}",
            str(j["twins_trained"]),
            str(j["readings"]),
        )
        for j in jobs
    ]
    conn.show({"items": jobs}, lambda: _table(f"{len(rows)} training jobs", columns, rows))


# -- alarms -------------------------------------------------------------------------------------


@click.group(epilog=EXIT_CODES)
def alarms() -> None:
    """List the alarms of a running platform and acknowledge them."""


# Ids are never wrapped or cut: they are what `alarms ack` needs; the other columns wrap.
_ALARM_COLUMNS: Final = (
    Column("twin", no_wrap=True),
    Column("alarm", no_wrap=True),
    "rule",
    "severity",
    "state",
    "raised at",
    "acknowledged",
)


def _acknowledged(alarm: Mapping[str, Any]) -> str:
    by = alarm.get("acknowledged_by")
    return f"{by} at {_when(alarm.get('acknowledged_at'))}" if by else ""


def _alarm_row(alarm: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        alarm.get("twin_id"),
        alarm.get("id"),
        alarm.get("rule"),
        alarm.get("severity"),
        alarm.get("state"),
        _when(alarm.get("raised_at")),
        _acknowledged(alarm),
    )


@alarms.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(ALARM_STATES),
    help="Only alarms in this state (repeatable; default: active and acknowledged).",
)
@click.option("--severity", metavar="LEVEL", help="Only alarms of this severity, e.g. critical.")
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=100,
    show_default=True,
    help="Twins with alarms per page (a twin may have several alarms).",
)
@click.option("--cursor", help="Start after this twin id (the previous page's `next`).")
@click.option("--all", "every", is_flag=True, help="Page through the alarms of every twin.")
@_platform
def alarms_list(
    conn: Connection,
    *,
    states: tuple[str, ...],
    severity: str | None,
    limit: int,
    cursor: str | None,
    every: bool,
) -> None:
    """List alarms, a page of twins at a time (or --all of them)."""
    query: dict[str, Any] = {"states": states or None, "severity": severity, "limit": limit}
    with conn.client() as fleet:
        page = fleet.alarms(**query, cursor=cursor)
        items, following = list(page.items), page.next
        while every and following:
            page = fleet.alarms(**query, cursor=following)
            items, following = items + page.items, page.next
    rows = [_alarm_row(alarm) for alarm in items]
    title = f"{len(rows)} alarms" + (f" (more: --cursor {following} or --all)" if following else "")
    conn.show({"items": items, "next": following}, lambda: _table(title, _ALARM_COLUMNS, rows))


@alarms.command("ack")
@click.argument("twin_id")
@click.argument("alarm_id")
@_platform
def alarms_ack(conn: Connection, twin_id: str, alarm_id: str) -> None:
    """Acknowledge an open alarm of a twin (exit 4 if the twin has no such alarm)."""
    with conn.client() as fleet:
        alarm = fleet.ack_alarm(twin_id, alarm_id)
    by = _acknowledged(alarm)
    conn.show(
        alarm,
        lambda: click.echo(f"{twin_id} {alarm_id}: {alarm['state']}" + (f" by {by}" if by else "")),
    )


@alarms.command("rules")
@_platform
def alarms_rules(conn: Connection) -> None:
    """Each family's alarm rules (built-in or custom)."""
    with conn.client() as fleet:
        items = fleet.alarm_rules()
    rows = [
        (
            item["family"],
            rule["name"],
            rule["condition"],
            rule["clear_after"],
            rule["severity"],
            item["source"],
        )
        for item in items
        for rule in item["rules"]
    ]
    columns = ("family", "rule", "raises when", "clears after", "severity", "source")
    conn.show({"items": items}, lambda: _table(f"{len(rows)} alarm rules", columns, rows))


@alarms.command("set-rules")
@click.argument("family")
@click.argument("rules", metavar="JSON|@FILE")
@_platform
def alarms_set_rules(conn: Connection, family: str, rules: str) -> None:
    """Replace FAMILY's alarm rules with a JSON array of rules ('@path' reads a file).

    \b
    A rule: {"name": "hot", "kind": "threshold", "metric": "temperature", "op": ">",
             "value": 80, "raise_after": 3, "raise_after_s": 60, "clear_after": 5,
             "severity": "critical"}   or   {"name": "anomaly", "kind": "anomaly", ...}
    Alarms of rules that are gone clear at once.
    """
    text = rules
    if rules.startswith("@"):
        try:
            text = Path(rules[1:]).read_text()
        except OSError as error:
            message = f"cannot read {rules[1:]}: {error}"
            raise click.BadParameter(message, param_hint="RULES") from None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="RULES") from None
    if not isinstance(parsed, list) or not all(isinstance(r, dict) for r in parsed):
        raise click.BadParameter("expected a JSON array of rule objects", param_hint="RULES")
    with conn.client() as fleet:
        item = fleet.set_alarm_rules(family, parsed)
    conn.show(item, lambda: click.echo(_rules_line(item)))


@alarms.command("reset-rules")
@click.argument("family")
@_platform
def alarms_reset_rules(conn: Connection, family: str) -> None:
    """Give FAMILY its built-in alarm rules back."""
    with conn.client() as fleet:
        item = fleet.set_alarm_rules(family, None)
    conn.show(item, lambda: click.echo(_rules_line(item)))


def _rules_line(item: Mapping[str, Any]) -> str:
    rules = "; ".join(f"{r['name']}: {r['condition']}" for r in item["rules"]) or "no rules"
    return f"{item['family']} ({item['source']}): {rules}"
