"""``twinfleet`` run the way a user runs it: the installed console script, as a child process.

Every run that gets past option parsing starts a local Ray of its own (5-8 s), so these tests
keep such runs few. Each child runs in its own session, with ``RAY_ADDRESS`` emptied so it
never joins another Ray; it and whatever it started are killed if a test ends early.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import free_port

from twinfleet.runtime.stores import open_store

pytestmark = pytest.mark.slow

TWINFLEET = Path(sys.executable).with_name("twinfleet")
RUN_TIMEOUT_S = 180.0  # Ray start, the run and the shutdown, on a loaded 2-core machine
QUICK_TIMEOUT_S = 60.0  # no Ray: option parsing only
UP_OPTIONS = (
    "--data-dir",
    "--store",
    "--ray-address",
    "--hosts",
    "--simulate",
    "--interval",
    "--duration",
    "--json",
)


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """This environment without any TWINFLEET_* setting, never pointing at another Ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINFLEET_")}
    env["RAY_ADDRESS"] = ""
    env.update(extra or {})
    return env


@contextmanager
def _twinfleet(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``twinfleet *args`` as a child in its own session; its process group is killed after."""
    proc = subprocess.Popen(
        [str(TWINFLEET), *args],
        cwd=cwd,
        env=_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        # Whatever is left in the child's group (it, or a Ray it failed to stop) goes too.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def _run(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = RUN_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run ``twinfleet *args`` to completion within ``timeout`` seconds."""
    with _twinfleet(*args, cwd=cwd, env=env) as proc:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _snapshots(data_dir: Path) -> list[dict[str, Any]]:
    """Every twin snapshot in the data directory's SQLite store (none if there is no store)."""
    path = data_dir / "state.db"
    if not path.exists():  # opening the store would create it
        return []
    store = open_store(f"sqlite:///{path}")
    try:
        snaps: list[dict[str, Any]] = []
        while page := store.scan(after=snaps[-1]["id"] if snaps else None, limit=1000):
            snaps.extend(page)
        return snaps
    finally:
        store.close()


def _stored_count(data_dir: Path) -> int:
    """How many twin snapshots the data directory's store holds."""
    path = data_dir / "state.db"
    if not path.exists():
        return 0
    store = open_store(f"sqlite:///{path}")
    try:
        return store.count()
    finally:
        store.close()


def _wait_until(
    condition: Callable[[], bool], proc: subprocess.Popen[str], *, timeout: float
) -> None:
    """Poll ``condition`` until it holds; fail if the child exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"twinfleet exited early with {proc.returncode}:\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.25)


def newest_stamp(stamps: Any) -> float:
    """The newest measurement time in a twin's stamp tree (nested objects included)."""
    if isinstance(stamps, dict):
        return max((newest_stamp(v) for v in stamps.values()), default=0.0)
    return float(stamps)


def _summary(stdout: str) -> dict[str, Any]:
    """The JSON fleet summary ``--json`` prints as the last line."""
    lines = stdout.strip().splitlines()
    assert lines, "no output"
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def test_up_runs_a_simulated_fleet_and_prints_a_json_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = _run(
        "up", "--simulate", "300", "--duration", "6", "--json", "--data-dir", str(data_dir),
        "--broker", "rumqttd", cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    # A clean first screen: where things are, one line for the taken port (Mosquitto has
    # 1883 here), no traceback, none of Ray's start-up lines (they go to the log file).
    screen = done.stdout + done.stderr
    assert "port 1883 is taken: the embedded MQTT broker listens on" in screen
    assert "dashboard http://" in screen
    assert f"admin token {data_dir / 'admin.token'}" in screen
    assert "Traceback" not in screen
    assert "Ray" not in screen.replace("on Ray,", "")
    assert "ray" in (data_dir / "twinfleet.log").read_text().lower()  # Ray's lines went there
    summary = _summary(done.stdout)
    assert summary["twins"] == 300
    assert summary["online"] == 300
    assert summary["applied"] > 0
    assert summary["rejected"] == 0
    assert summary["offline_transitions"] == 0
    assert summary["edge_restarts"] == 0
    # every message a device had acknowledged reached its twin
    assert summary["final"]["drained"] is True
    assert summary["final"]["devices_sent"] == summary["final"]["hosts_took"]
    assert set(summary["flow"]) == {"mqtt", "coap"}
    assert all(f["messages_per_s"] > 0 for f in summary["flow"].values())
    assert {"driver", "broker", "gateway-0", "coap", "host-0"} <= set(summary["cpu_s"])
    snaps = _snapshots(data_dir)
    assert len(snaps) == 300
    assert all(s["id"].startswith("sim-") and s["reported"] for s in snaps)
    assert not (tmp_path / ".twinfleet").exists()


def test_sigterm_stops_cleanly_and_flushes_state(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with _twinfleet(
        "up", "--simulate", "200", "--interval", "1", "--data-dir", str(data_dir), cwd=tmp_path
    ) as proc:
        _wait_until(lambda: _stored_count(data_dir) == 200, proc, timeout=RUN_TIMEOUT_S)
        time.sleep(2.0)  # readings keep arriving; the ones just before SIGTERM must survive it
        signalled_at = time.time()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)

    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert any(line.startswith("twinfleet: shutting down, flushing state") for line in lines)
    assert lines[-1] == "twinfleet: stopped"
    snaps = _snapshots(data_dir)
    assert len(snaps) == 200
    # Each device reports once a second until the stop, so every twin's newest reading is
    # recent; a few seconds of slack absorbs a busy machine.
    newest = {s["id"]: newest_stamp(s["reported_ts"]) for s in snaps}
    stale = {i: round(signalled_at - ts, 2) for i, ts in newest.items() if ts < signalled_at - 3}
    assert not stale


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] from ``url``/metrics (empty while it does not answer)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def _edge_values(samples: dict[str, Any], name: str) -> dict[str, float]:
    return {labels["edge"]: value for labels, value in samples.get(name, [])}


def test_a_running_platform_shows_its_lag_and_edges_and_restarts_a_killed_edge(
    tmp_path: Path,
) -> None:
    import psutil

    data_dir = tmp_path / "data"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _twinfleet(
        "up", "--simulate", "100", "--interval", "1", "--port", str(port), "--coap-port", "0",
        "--mqtt-port", "0", "--data-dir", str(data_dir), cwd=tmp_path,
    ) as proc:  # fmt: skip

        def lag_of_both() -> bool:
            samples = _scrape(url)
            protocols = {
                labels["protocol"]
                for labels, _ in samples.get("twinfleet_message_lag_seconds_count", [])
                if labels["since"] == "received"
            }
            return {"mqtt", "coap"} <= protocols

        _wait_until(lag_of_both, proc, timeout=RUN_TIMEOUT_S)
        samples = _scrape(url)
        up = _edge_values(samples, "twinfleet_edge_up")
        edges = ("broker", "gateway-0", "gateway-1", "coap", "devices-mqtt", "devices-coap")
        assert up == dict.fromkeys(edges, 1.0)

        def counted(name: str) -> float:
            return sum(_edge_values(_scrape(url), name).values())

        # the supervisor refreshes the edges' counters every second
        _wait_until(
            lambda: (
                counted("twinfleet_gateway_batches_total") > 0
                and counted("twinfleet_gateway_messages_received_total") > 0
                and counted("twinfleet_coap_requests_total") > 0
            ),
            proc,
            timeout=30,
        )
        assert all(
            v > 0 for v in _edge_values(samples, "twinfleet_edge_cpu_seconds_total").values()
        )
        # The flow per protocol, as the dashboard reads it.
        token = (data_dir / "admin.token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        httpx.get(f"{url}/api/v1/ingest", headers=auth, timeout=10)
        time.sleep(2.5)
        flow = httpx.get(f"{url}/api/v1/ingest", headers=auth, timeout=10).json()["protocols"]
        by_protocol = {row["protocol"]: row for row in flow}
        assert by_protocol["mqtt"]["messages_per_s"] > 0
        assert by_protocol["coap"]["messages_per_s"] > 0
        assert 0 < by_protocol["mqtt"]["lag_p99_s"] < 5

        # SIGKILL the CoAP endpoint's process: the supervisor starts it again, on its port.
        (victim,) = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "ray::CoapProcess" in " ".join(p.info["cmdline"] or ())
        ]
        victim.kill()

        def restarted() -> bool:
            samples = _scrape(url)
            return (
                _edge_values(samples, "twinfleet_edge_restarts_total").get("coap") == 1.0
                and _edge_values(samples, "twinfleet_edge_up").get("coap") == 1.0
            )

        _wait_until(restarted, proc, timeout=RUN_TIMEOUT_S)
        before = _edge_values(_scrape(url), "twinfleet_coap_requests_total")["coap"]
        _wait_until(
            lambda: _edge_values(_scrape(url), "twinfleet_coap_requests_total")["coap"] > before,
            proc,
            timeout=60,
        )
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, err


def test_up_reads_its_options_from_the_environment(tmp_path: Path) -> None:
    data_dir = tmp_path / "from-env"
    env = {
        "TWINFLEET_SIMULATE": "50",
        "TWINFLEET_DURATION": "4",
        "TWINFLEET_DATA_DIR": str(data_dir),
    }
    done = _run("up", "--json", cwd=tmp_path, env=env)

    assert done.returncode == 0, done.stderr
    summary = _summary(done.stdout)
    assert summary["twins"] == 50
    assert summary["applied"] > 0
    assert _stored_count(data_dir) == 50
    assert not (tmp_path / ".twinfleet").exists()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--simulate", "-3"), {}, "Invalid value for '--simulate': -3"),
        (("--simulate", "lots"), {}, "Invalid value for '--simulate': 'lots'"),
        (("--hosts", "0"), {}, "Invalid value for '--hosts': 0"),
        ((), {"TWINFLEET_SIMULATE": "-3"}, "Invalid value for '--simulate': -3"),
        (("--rate-limit", "lots"), {}, "rate limit 'lots' is not like '3000/minute'"),
        (("--retention", "0"), {}, "--retention '0': expected positive days or 'forever'"),
        ((), {"TWINFLEET_RETENTION": "week"}, "--retention 'week': expected positive days"),
    ],
    ids=["negative", "not-a-number", "no-hosts", "from-env", "rate-limit", "retention", "env-ret"],
)
def test_up_rejects_bad_options_before_starting_anything(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    data_dir = tmp_path / "data"
    done = _run(
        "up", *args, "--data-dir", str(data_dir), cwd=tmp_path, env=env, timeout=QUICK_TIMEOUT_S
    )

    assert done.returncode == 2
    assert message in done.stderr
    assert "twinfleet up --help" in done.stderr
    assert "Ray" not in done.stderr
    assert done.stdout == ""
    assert not data_dir.exists()


def test_help_and_version(tmp_path: Path) -> None:
    top = _run("--help", cwd=tmp_path, timeout=QUICK_TIMEOUT_S)
    assert top.returncode == 0, top.stderr
    assert "Usage: twinfleet" in top.stdout
    assert "up " in top.stdout
    assert "--version" in top.stdout

    up = _run("up", "--help", cwd=tmp_path, timeout=QUICK_TIMEOUT_S)
    assert up.returncode == 0, up.stderr
    assert "Usage: twinfleet up" in up.stdout
    missing = [option for option in UP_OPTIONS if option not in up.stdout]
    assert not missing

    version = _run("--version", cwd=tmp_path, timeout=QUICK_TIMEOUT_S)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "twinfleet, version 0.1.0"


@pytest.mark.services
def test_up_with_an_external_broker_takes_devices_over_mqtt_and_coap(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = _run(
        "up", "--simulate", "100", "--interval", "1", "--duration", "8", "--json",
        "--mqtt", "mqtt://127.0.0.1:1883", "--coap-port", "0", "--data-dir", str(data_dir),
        cwd=tmp_path,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "MQTT mqtt://127.0.0.1:1883 (external, 2 gateways)" in done.stdout
    summary = _summary(done.stdout)
    assert summary["twins"] == 100
    assert summary["mqtt_in"] > 0
    assert summary["coap_in"] > 0
    protocols = {s["protocol"] for s in _snapshots(data_dir)}
    assert protocols == {"mqtt", "coap"}


def test_evaluate_scores_every_installed_model(tmp_path: Path) -> None:
    done = _run(
        "evaluate",
        *("--devices", "10", "--hours", "1", "--train-hours", "0.5", "--json"),
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["readings"] == 10 * 360
    assert figures["scored_readings"] == figures["training"]["readings"] == 10 * 180
    assert sum(figures["anomalies"].values()) > 0
    assert {"combined", "ewma", "mad", "mahalanobis", "sklearn", "stuck"} <= set(figures["models"])
    assert figures["models"]["sklearn"]["fitted"] == 5  # trained per family, then scored
    assert figures["models"]["ewma"]["overall"]["readings"] == 10 * 180
    for model in figures["models"].values():
        overall = model["overall"]
        assert 0.0 <= overall["precision"] <= 1.0
        for kind in ("spike", "drift", "stuck"):
            assert overall[kind]["labelled"] == figures["anomalies"][kind]
            assert 0 <= overall[kind]["found"] <= overall[kind]["labelled"]
        assert set(model["families"]) <= {
            "smart-sensor",
            "industrial-controller",
            "smart-meter",
            "patient-monitor",
            "vehicle-tracker",
        }
    # The stuck-value detector finds stuck values and raises no more alarms than the others.
    stuck = figures["models"]["stuck"]["overall"]
    assert stuck["spike"]["found"] == 0
    assert "model stuck" in done.stderr  # the tables go to stderr with --json
    assert "all models, all families" in done.stderr


def test_evaluate_names_the_known_models_for_an_unknown_one(tmp_path: Path) -> None:
    done = _run("evaluate", "--model", "nope", cwd=tmp_path, timeout=QUICK_TIMEOUT_S)
    assert done.returncode == 2
    known = (
        r"no anomaly model named 'nope' "
        r"\(known: combined, ewma, (level, )?mad, mahalanobis, sklearn, stuck\)"
    )
    assert re.search(known, done.stderr), done.stderr
