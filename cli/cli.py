"""The ``twinfleet`` command line."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Literal

import click
from rich.console import Console

from twinfleet.adapters.defaults import DEFAULT_COAP_URL, DEFAULT_MQTT_URL
from twinfleet.errors import TwinfleetError

from .commands import alarms, devices, models, tokens, twins
from .options import EdgeOptions, UpOptions

# The platform's own modules (Ray, the broker, FastAPI) load inside the commands that run
# it: `twinfleet twins list` is an HTTP client and starts in a fraction of a second.

__all__ = ["main"]


# Options `up` and `simulate` share: one definition each.
interval_option = click.option(
    "--interval",
    type=click.FloatRange(min=0.001),
    default=None,
    envvar="TWINFLEET_INTERVAL",
    help="Seconds between readings of each simulated device (default: its family's).",
)
duration_option = click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    envvar="TWINFLEET_DURATION",
    help="Stop after this many seconds (default: run until stopped).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="twinfleet")
def cli() -> None:
    """twinfleet: digital twins for IoT device fleets, on Ray."""


@cli.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".twinfleet"),
    show_default=True,
    envvar="TWINFLEET_DATA_DIR",
    help="Where the embedded state store and tokens live.",
)
@click.option(
    "--store",
    envvar="TWINFLEET_STORE",
    metavar="URL",
    help="State store: sqlite:///path (default: <data-dir>/state.db) or redis://host:port/db.",
)
@click.option(
    "--tsdb",
    envvar="TWINFLEET_TSDB",
    metavar="URL",
    help="Telemetry history: sqlite:///path (default: <data-dir>/telemetry.db) or "
    "influx://host:port?bucket=B&org=O&token=T (InfluxDB or VictoriaMetrics; written only).",
)
@click.option(
    "--retention",
    envvar="TWINFLEET_RETENTION",
    default="7",
    show_default=True,
    metavar="DAYS",
    help="Days of history the embedded sink keeps ('forever' to keep all; Influx has its own).",
)
@click.option(
    "--rate-limit",
    envvar="TWINFLEET_RATE_LIMIT",
    default="3000/minute",
    show_default=True,
    metavar="N/PERIOD",
    help="API requests allowed per token, like 50/second or 3000/minute; 'none' for no limit.",
)
@click.option(
    "--ray-address",
    envvar="TWINFLEET_RAY_ADDRESS",
    metavar="ADDRESS",
    help="Join this Ray cluster instead of starting a local Ray.",
)
@click.option(
    "--hosts",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    envvar="TWINFLEET_HOSTS",
    help="TwinHost actors to start.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="TWINFLEET_HOST",
    help="Address the CoAP endpoint and the embedded MQTT broker listen on.",
)
@click.option(
    "--mqtt",
    envvar="TWINFLEET_MQTT",
    metavar="URL",
    help="MQTT broker (mqtt://host:port, mqtts:// for TLS); default: an embedded broker.",
)
@click.option(
    "--gateways",
    type=click.IntRange(min=1),
    envvar="TWINFLEET_GATEWAYS",
    metavar="N",
    help="MQTT gateway processes sharing the device topics (default: one per core, at most 4).",
)
@click.option(
    "--broker",
    type=click.Choice(["auto", "mosquitto", "rumqttd"]),
    default="auto",
    show_default=True,
    envvar="TWINFLEET_BROKER",
    help="The embedded MQTT broker (without --mqtt): Mosquitto when installed, else rumqttd.",
)
@click.option(
    "--mqtt-port",
    type=click.IntRange(0, 65535),
    default=1883,
    show_default=True,
    envvar="TWINFLEET_MQTT_PORT",
    help="Port of the embedded broker (a free one if it is taken).",
)
@click.option(
    "--mqtt-ca",
    envvar="TWINFLEET_MQTT_CA",
    metavar="FILE",
    help="CA certificate that signed the broker's certificate (mqtts://).",
)
@click.option(
    "--mqtt-cert",
    envvar="TWINFLEET_MQTT_CERT",
    metavar="FILE",
    help="Client certificate for mutual TLS.",
)
@click.option(
    "--mqtt-key", envvar="TWINFLEET_MQTT_KEY", metavar="FILE", help="Key of the client certificate."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    envvar="TWINFLEET_PORT",
    help="Port of the HTTP API.",
)
@click.option(
    "--coap-port",
    type=click.IntRange(0, 65535),
    default=5683,
    show_default=True,
    envvar="TWINFLEET_COAP_PORT",
    help="UDP port of the CoAP endpoint.",
)
@click.option(
    "--simulate",
    type=click.IntRange(min=0),
    default=0,
    envvar="TWINFLEET_SIMULATE",
    metavar="N",
    help="Also run N simulated devices of the five families (80% MQTT, 20% CoAP).",
)
@interval_option
@duration_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="TWINFLEET_JSON",
    help="Print the final fleet summary as JSON.",
)
def up(  # noqa: PLR0917 - click passes options positionally
    data_dir: Path,
    store: str | None,
    tsdb: str | None,
    retention: str,
    rate_limit: str,
    ray_address: str | None,
    hosts: int,
    host: str,
    mqtt: str | None,
    gateways: int | None,
    broker: str,
    mqtt_port: int,
    mqtt_ca: str | None,
    mqtt_cert: str | None,
    mqtt_key: str | None,
    port: int,
    coap_port: int,
    simulate: int,
    interval: float | None,
    duration: float | None,
    as_json: bool,
) -> None:
    """Run the platform in the foreground; Ctrl-C or SIGTERM stops it cleanly."""
    from twinfleet.adapters.mqtt import MqttSettings
    from twinfleet.api.ratelimit import RequestLimiter
    from twinfleet.runtime.telemetry import open_telemetry

    from .up import run_up

    try:
        edges = EdgeOptions(
            host=host,
            mqtt=mqtt,
            gateways=gateways,
            broker=broker,
            mqtt_port=mqtt_port,
            mqtt_ca=mqtt_ca,
            mqtt_cert=mqtt_cert,
            mqtt_key=mqtt_key,
            coap_port=coap_port,
            port=port,
            simulate=simulate,
            interval_s=interval,
            rate_limit=None if rate_limit.lower() == "none" else rate_limit,
        )
        if edges.rate_limit is not None:
            RequestLimiter(edges.rate_limit)  # a clear error now rather than at start-up
        if mqtt:
            MqttSettings.from_url(mqtt, ca_file=mqtt_ca, cert_file=mqtt_cert, key_file=mqtt_key)
        if tsdb:
            if not tsdb.startswith(("sqlite:///", "memory://", "influx://")):
                raise ValueError(
                    f"--tsdb {tsdb!r}: expected sqlite:///path, memory:// or "
                    "influx://host:port?bucket=...&org=...&token=..."
                )
            if tsdb.startswith("influx://"):
                open_telemetry(tsdb).close()  # a malformed URL fails here, before start-up
        keep = _retention_days(retention)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    summary = run_up(
        UpOptions(
            data_dir=data_dir,
            store=store,
            tsdb=tsdb,
            retention_days=keep,
            ray_address=ray_address,
            hosts=hosts,
            duration_s=duration,
            edges=edges,
        )
    )
    if as_json:
        click.echo(json.dumps(summary))


def _retention_days(text: str) -> float | None:
    """``--retention``: positive days, or None for 'forever'."""
    if text.strip().lower() == "forever":
        return None
    try:
        days = float(text)
    except ValueError:
        days = math.nan
    if not days > 0:
        raise ValueError(f"--retention {text!r}: expected positive days or 'forever'")
    return days


@cli.command()
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    envvar="TWINFLEET_DEVICES",
    help="Simulated devices, spread over the five families.",
)
@click.option(
    "--mqtt",
    default=DEFAULT_MQTT_URL,
    show_default=True,
    envvar="TWINFLEET_MQTT",
    metavar="URL",
    help="MQTT broker the devices connect to (mqtt://[user:pass@]host:port, mqtts:// for TLS).",
)
@click.option(
    "--coap",
    envvar="TWINFLEET_COAP",
    metavar="URL",
    help="Send over CoAP to this endpoint (coap://host:port) instead of MQTT.",
)
@interval_option
@click.option(
    "--connections",
    type=click.IntRange(min=1),
    default=None,
    envvar="TWINFLEET_CONNECTIONS",
    help="MQTT connections the devices share (default: min(devices, 100)); "
    "a last will per device needs one connection per device.",
)
@duration_option
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="TWINFLEET_LABELS",
    metavar="FILE",
    help="Write each injected anomaly to FILE as a JSON line (the file is truncated).",
)
@click.option(
    "--anomaly-rate",
    type=click.FloatRange(min=0.0, max=1.0),
    default=0.0005,
    show_default=True,
    envvar="TWINFLEET_ANOMALY_RATE",
    help="Probability that a reading starts an anomaly.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, envvar="TWINFLEET_SEED", help="Random seed."
)
@click.option(
    "--prefix",
    default="sim",
    show_default=True,
    envvar="TWINFLEET_PREFIX",
    help="Device ids are <prefix>-<family>-<n>.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="TWINFLEET_JSON",
    help="Print the final summary as JSON.",
)
def simulate(  # noqa: PLR0917 - click passes options positionally
    devices: int,
    mqtt: str,
    coap: str | None,
    interval: float | None,
    connections: int | None,
    duration: float | None,
    labels: Path | None,
    anomaly_rate: float,
    seed: int,
    prefix: str,
    as_json: bool,
) -> None:
    """Run simulated devices against a broker (or CoAP endpoint); Ctrl-C or SIGTERM stops them."""
    from twinfleet.adapters.devices import SimulatedDevicesOptions

    from .simulate import run_simulate

    try:
        options = SimulatedDevicesOptions(
            devices=devices,
            protocol="coap" if coap else "mqtt",
            mqtt=mqtt,
            coap=coap or DEFAULT_COAP_URL,
            interval_s=interval,
            connections=connections,
            prefix=prefix,
            seed=seed,
            anomaly_rate=anomaly_rate,
            labels=labels,
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    summary = run_simulate(options, duration_s=duration)
    if as_json:
        click.echo(json.dumps(summary))


@cli.command()
@click.option("--devices", type=click.IntRange(min=1), default=50, show_default=True)
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    default=6.0,
    show_default=True,
    help="Simulated time to replay.",
)
@click.option(
    "--every",
    "interval",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds between two readings of a device.",
)
@click.option(
    "--anomaly-rate",
    type=click.FloatRange(min=0, max=0.1, min_open=True),
    default=0.002,
    show_default=True,
    help="Probability that a reading starts an anomaly.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--train-hours",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="The first hours of the replay train the models and are not scored (less than "
    "--hours; 0: no training).",
)
@click.option(
    "--train-scope",
    type=click.Choice(["family", "twin"]),
    default="family",
    show_default=True,
    help="Fit a trainable model once per device family on all its devices' readings, "
    "or each device on its own.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME[:JSON]",
    help="A model to evaluate, with parameters as a JSON object: 'mad:{\"threshold\": 8}' "
    "(repeatable, also one name with different parameters; default: every installed model).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def evaluate(  # noqa: PLR0917 - click passes options positionally
    devices: int,
    hours: float,
    interval: float,
    anomaly_rate: float,
    seed: int,
    train_hours: float,
    train_scope: Literal["family", "twin"],
    models: tuple[str, ...],
    as_json: bool,
) -> None:
    """Score anomaly models on the simulator's labelled spikes, drifts and stuck values.

    The first --train-hours fit the models that learn from history (the others stream through
    them); the rest is scored. Prints precision, recall and F1 per kind and family for each
    model (built-in or installed from a plugin package), and a summary of all of them, so a
    new model, or a model with other parameters, can be compared with the built-ins.
    """
    from .evaluate import EvaluationOptions, ModelChoice, run_evaluation

    try:
        options = EvaluationOptions(
            devices=devices,
            hours=hours,
            interval_s=interval,
            anomaly_rate=anomaly_rate,
            seed=seed,
            train_hours=train_hours,
            train_scope=train_scope,
            models=tuple(ModelChoice.parse(text) for text in models),
        )
        figures = run_evaluation(options, console=Console(stderr=True) if as_json else None)
    except (ValueError, TwinfleetError) as err:
        raise click.UsageError(str(err)) from err
    if as_json:
        click.echo(json.dumps(figures))


cli.add_command(twins)
cli.add_command(devices)
cli.add_command(tokens)
cli.add_command(models)
cli.add_command(alarms)


def main() -> None:
    """Entry point of the ``twinfleet`` console script."""
    sys.exit(cli())
