"""The ``twinfleet`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .up import UpOptions, run_up

__all__ = ["main"]


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
    "--simulate",
    type=click.IntRange(min=0),
    default=0,
    envvar="TWINFLEET_SIMULATE",
    metavar="N",
    help="Also run N simulated devices of the five families.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    envvar="TWINFLEET_INTERVAL",
    help="Seconds between readings of each simulated device.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    envvar="TWINFLEET_DURATION",
    help="Stop after this many seconds (default: run until stopped).",
)
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
    ray_address: str | None,
    hosts: int,
    simulate: int,
    interval: float,
    duration: float | None,
    as_json: bool,
) -> None:
    """Run the platform in the foreground; Ctrl-C or SIGTERM stops it cleanly."""
    summary = run_up(
        UpOptions(
            data_dir=data_dir,
            store=store,
            ray_address=ray_address,
            hosts=hosts,
            simulate=simulate,
            interval_s=interval,
            duration_s=duration,
        )
    )
    if as_json:
        click.echo(json.dumps(summary))


def main() -> None:
    """Entry point of the ``twinfleet`` console script."""
    sys.exit(cli())
