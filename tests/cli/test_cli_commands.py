"""The ``twins``, ``devices``, ``tokens``, ``models`` and ``alarms`` commands against the API over
real HTTP."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import T0, Served, free_port

from twinfleet.cli.cli import cli
from twinfleet.client import TwinClient
from twinfleet.runtime import DeviceMessage

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def run(served: Served, *args: str, role: str = "admin", token: str | None = None) -> Result:
    """``twinfleet ARGS --url ... --token ...``, in process."""
    options = ["--url", served.url, "--token", token or served.tokens[role]]
    return CliRunner().invoke(cli, [*args, *options], catch_exceptions=False)


def failed_with(result: Result, exit_code: int, code: str) -> bool:
    line = result.stderr.strip()
    return result.exit_code == exit_code and line.startswith(f"twinfleet: {code}: ")


def test_twins_list_and_get(served: Served) -> None:
    page = json.loads(run(served, "twins", "list", "--type", "smart-sensor", "--json").stdout)
    assert {"api-0", "api-4"} <= {doc["id"] for doc in page["items"]}

    human = run(served, "twins", "list", "--filter", "reported.temperature >= 23", "--limit", "1")
    assert human.exit_code == 0
    assert "api-3" in human.stdout
    assert "api-4" not in human.stdout
    assert "--all" in human.stdout

    every = run(served, "twins", "list", "--limit", "2", "--all", "--json")
    assert {f"api-{i}" for i in range(5)} <= {d["id"] for d in json.loads(every.stdout)["items"]}

    doc = json.loads(run(served, "twins", "get", "api-1").stdout)
    assert doc["id"] == "api-1"
    assert doc["reported"]["temperature"] == 21.0


def test_desired_tags_and_conflict(served: Served) -> None:
    version = json.loads(run(served, "twins", "get", "api-2", "--json").stdout)["version"]
    result = run(served, "twins", "desired", "api-2", '{"interval": 5}', "--if-match", str(version))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["desired"]["interval"] == 5

    stale = run(served, "twins", "desired", "api-2", '{"interval": 6}', "--if-match", str(version))
    assert failed_with(stale, 6, "version_conflict")

    tagged = run(served, "twins", "tags", "api-2", '{"site": "plant-a"}', "--json")
    assert json.loads(tagged.stdout)["tags"]["site"] == "plant-a"
    listed = run(served, "twins", "list", "--tag", "site:plant-a", "--json")
    assert [doc["id"] for doc in json.loads(listed.stdout)["items"]] == ["api-2"]

    assert run(served, "twins", "desired", "api-2", "[1]").exit_code == 2


def test_command_not_final_exits_3(served: Served) -> None:
    result = run(
        served,
        "twins",
        "command",
        "api-3",
        "reboot",
        "--params",
        '{"now": true}',
        "--timeout",
        "0",
        "--json",
    )
    assert result.exit_code == 3
    assert json.loads(result.stdout)["status"] in {"queued", "sent"}


def test_devices(served: Served) -> None:
    registered = run(
        served,
        "devices",
        "register",
        "cli-dev-1",
        "--type",
        "smart-meter",
        "--tags",
        '{"site": "b"}',
        role="operator",
    )
    assert registered.exit_code == 0, registered.stderr
    assert json.loads(registered.stdout)["lifecycle"] == "registered"
    again = run(served, "devices", "register", "cli-dev-1", role="operator")
    assert failed_with(again, 6, "conflict")
    assert failed_with(
        run(served, "devices", "suspend", "cli-dev-1", role="viewer"), 5, "forbidden"
    )

    suspended = run(served, "devices", "suspend", "cli-dev-1", role="operator")
    assert json.loads(suspended.stdout)["lifecycle"] == "suspended"
    entry = json.loads(run(served, "devices", "get", "cli-dev-1").stdout)
    assert entry["lifecycle"] == "suspended"
    assert json.loads(run(served, "devices", "resume", "cli-dev-1").stdout)["lifecycle"] == "active"
    assert "cli-dev-1" in run(served, "devices", "list").stdout
    assert failed_with(run(served, "devices", "get", "cli-none"), 4, "not_found")


def test_tokens(served: Served) -> None:
    created = json.loads(run(served, "tokens", "create", "viewer", "--name", "ci", "--json").stdout)
    assert created["token"].startswith("tf_")
    listed = json.loads(run(served, "tokens", "list", "--json").stdout)
    assert created["id"] in {t["id"] for t in listed}
    assert created["id"] in run(served, "tokens", "list").stdout

    assert run(served, "twins", "get", "api-0", token=created["token"]).exit_code == 0
    assert run(served, "tokens", "revoke", created["id"]).exit_code == 0
    revoked = run(served, "twins", "get", "api-0", token=created["token"])
    assert failed_with(revoked, 5, "unauthorized")
    assert failed_with(run(served, "tokens", "revoke", created["id"]), 4, "not_found")


def test_exit_codes_of_errors(served: Served, tmp_path: Path) -> None:
    assert failed_with(
        run(served, "twins", "get", "api-0", token="tf_bad_token"), 5, "unauthorized"
    )
    assert failed_with(run(served, "twins", "get", "no-such-twin"), 4, "twin_not_found")

    closed = CliRunner().invoke(
        cli, ["twins", "list", "--url", f"http://127.0.0.1:{free_port()}", "--token", "x"]
    )
    assert failed_with(closed, 7, "unavailable")

    # no --token: the admin token of --data-dir, or exit 5 when there is none
    options = ["--url", served.url, "--data-dir", str(tmp_path)]
    no_token = CliRunner().invoke(cli, ["twins", "get", "api-0", *options], env={})
    assert failed_with(no_token, 5, "no_token")
    (tmp_path / "admin.token").write_text(served.tokens["admin"] + "\n")
    assert CliRunner().invoke(cli, ["twins", "get", "api-0", *options], env={}).exit_code == 0


def test_watch_receives_a_desired_event(served: Served) -> None:
    results: list[Result] = []
    watcher = threading.Thread(
        target=lambda: results.append(
            run(
                served,
                "twins",
                "watch",
                "--type",
                "desired",
                "--twin",
                "api-4",
                "--max-events",
                "1",
                "--json",
            )
        ),
        daemon=True,
    )
    watcher.start()
    # the stream starts from the events after it connects: patch until the watcher has one
    deadline = time.monotonic() + 30
    with TwinClient(served.url, served.tokens["admin"]) as fleet:
        n = 0
        while watcher.is_alive() and time.monotonic() < deadline:
            n += 1
            fleet.patch_desired("api-4", {"watched": n})
            watcher.join(0.3)
    assert results, "watch did not stop after one event"
    event = json.loads(results[0].stdout.splitlines()[0])
    assert (event["type"], event["twin_id"]) == ("desired", "api-4")
    assert results[0].exit_code == 0


def test_models(served: Served) -> None:
    served.runtime.ingest(
        [DeviceMessage("cli-m-1", "telemetry", {"spo2": 97.0}, T0, "test", "patient-monitor")]
    )
    served.runtime.flush()
    listed = run(served, "models", "list", "--json", role="viewer")
    assert listed.exit_code == 0
    assert {"combined", "ewma", "mad", "stuck"} <= {
        m["name"] for m in json.loads(listed.output)["items"]
    }
    denied = run(served, "models", "assign", "patient-monitor", "stuck", role="viewer")
    assert denied.exit_code != 0
    done = run(
        served,
        "models",
        "assign",
        "patient-monitor",
        "combined",
        "--params",
        '{"stuck": {"repeats": 4}}',
        role="data-scientist",
    )
    assert done.exit_code == 0, done.output
    assert "patient-monitor: combined" in done.output
    table = run(served, "models", "list", role="viewer")
    assert "patient-monitor" in table.output
    own = run(served, "models", "set", "cli-m-1", "mad", "--json", role="data-scientist")
    assert json.loads(own.output)["anomaly"]["source"] == "twin"
    back = run(served, "models", "set", "cli-m-1", "family", role="data-scientist")
    assert "cli-m-1: combined (family)" in back.output
    reset = run(served, "models", "assign", "patient-monitor", "default", role="admin")
    assert reset.exit_code == 0
    bad = run(served, "models", "assign", "patient-monitor", "nope", role="admin")
    assert bad.exit_code != 0
    assert "no anomaly model named 'nope'" in bad.output


def test_alarms_listed_and_acknowledged(served: Served) -> None:
    # patient monitors raise spo2-low (critical) after 2 readings below 90
    served.runtime.ingest(
        DeviceMessage("cli-alm-1", "telemetry", {"spo2": v}, T0 + 10 + k, "test", "patient-monitor")
        for k, v in enumerate((97.0, 89.0, 88.0))
    )
    served.runtime.flush()

    listed = run(served, "alarms", "list", "--json", role="viewer")
    assert listed.exit_code == 0, listed.stderr
    (alarm,) = [a for a in json.loads(listed.stdout)["items"] if a["twin_id"] == "cli-alm-1"]
    assert (alarm["rule"], alarm["severity"], alarm["state"]) == ("spo2-low", "critical", "active")
    table = run(served, "alarms", "list", "--severity", "critical", role="viewer")
    assert table.exit_code == 0, table.stderr
    assert f"cli-alm-1 │ {alarm['id']} │" in table.stdout  # ids whole, even 80 columns wide
    none = run(served, "alarms", "list", "--severity", "info", "--json", role="viewer")
    assert json.loads(none.stdout)["items"] == []

    denied = run(served, "alarms", "ack", "cli-alm-1", alarm["id"], role="viewer")
    assert failed_with(denied, 5, "forbidden")
    acked = run(served, "alarms", "ack", "cli-alm-1", alarm["id"], "--json", role="operator")
    assert acked.exit_code == 0, acked.stderr
    done = json.loads(acked.stdout)
    assert (done["id"], done["state"]) == (alarm["id"], "acknowledged")
    assert done["acknowledged_by"]  # the token's name or id
    assert done["acknowledged_at"] is not None

    by_state = run(served, "alarms", "list", "--state", "acknowledged", "--json", role="viewer")
    mine = [a for a in json.loads(by_state.stdout)["items"] if a["twin_id"] == "cli-alm-1"]
    assert [(a["id"], a["state"]) for a in mine] == [(alarm["id"], "acknowledged")]
    active = run(served, "alarms", "list", "--state", "active", "--json", role="viewer")
    assert all(a["twin_id"] != "cli-alm-1" for a in json.loads(active.stdout)["items"])
    # the table, on a terminal wide enough for every column
    options = ["--url", served.url, "--token", served.tokens["viewer"]]
    wide = CliRunner().invoke(
        cli,
        ["alarms", "list", "--state", "acknowledged", "--all", *options],
        env={"COLUMNS": "160"},
    )
    line = next(row for row in wide.stdout.splitlines() if "cli-alm-1" in row)
    assert all(word in line for word in (alarm["id"], "acknowledged", done["acknowledged_by"]))
    shown = run(served, "alarms", "ack", "cli-alm-1", alarm["id"], role="operator")
    assert shown.stdout.startswith(f"cli-alm-1 {alarm['id']}: acknowledged by ")

    unknown = run(served, "alarms", "ack", "cli-alm-1", "nope", role="operator")
    assert failed_with(unknown, 4, "alarm_not_found")
    assert "no alarm 'nope'" in unknown.stderr
    assert run(served, "alarms", "list", "--state", "sleeping").exit_code == 2


def test_models_train(served: Served) -> None:
    rows = [
        DeviceMessage(
            f"cli-tr-{i}",
            "telemetry",
            {"power": 2.0 + k % 7, "voltage": 230.0 + k % 5},
            T0 + k,
            "test",
            "smart-meter",
        )
        for k in range(60)
        for i in range(3)
    ]
    served.runtime.ingest(rows)
    served.runtime.flush()
    done = run(
        served,
        "models",
        "train",
        "--family",
        "smart-meter",
        "--model",
        "mahalanobis",
        role="data-scientist",
    )
    assert done.exit_code == 0, done.output
    assert "succeeded" in done.output
    assert "3 twins trained on 180 readings" in done.output
    listed = run(served, "models", "trainings", "--json", role="viewer")
    job = json.loads(listed.output)["items"][0]
    assert (job["model"], job["status"]) == ("mahalanobis", "succeeded")
    table = run(served, "models", "trainings", role="viewer")
    assert job["id"] in table.output
    short = run(
        served,
        "models",
        "train",
        "--twin",
        "cli-tr-0",
        "--scope",
        "twin",
        "--model",
        "sklearn",
        "--params",
        '{"min_history": 500}',
        role="data-scientist",
    )
    assert short.exit_code == 1
    assert "500 needed" in short.output
    run(served, "models", "assign", "smart-meter", "default", role="admin")


def test_alarm_rules_shown_set_from_a_file_and_reset(served: Served, tmp_path: Path) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            [
                {
                    "name": "leak",
                    "kind": "threshold",
                    "metric": "flow",
                    "op": ">",
                    "value": 40,
                    "raise_after_s": 60,
                    "severity": "critical",
                },
            ]
        )
    )
    shown = run(served, "alarms", "rules", role="viewer")
    assert shown.exit_code == 0, shown.output
    assert "spo2-low" in shown.output
    denied = run(served, "alarms", "set-rules", "smart-meter", f"@{rules}", role="viewer")
    assert failed_with(denied, 5, "forbidden")
    done = run(served, "alarms", "set-rules", "smart-meter", f"@{rules}", role="operator")
    assert done.exit_code == 0, done.output
    assert "smart-meter (custom): leak: flow > 40 for 3 readings or 60 s" in done.output
    listed = json.loads(run(served, "alarms", "rules", "--json", role="viewer").output)
    meter = next(i for i in listed["items"] if i["family"] == "smart-meter")
    assert [r["name"] for r in meter["rules"]] == ["leak"]
    bad = run(served, "alarms", "set-rules", "smart-meter", '{"name": "x"}', role="operator")
    assert bad.exit_code == 2
    assert "expected a JSON array of rule objects" in bad.output
    invalid = run(served, "alarms", "set-rules", "smart-meter", '[{"name": "x", "op": "~"}]')
    assert invalid.exit_code == 2  # the API's 400: a usage error
    reset = run(served, "alarms", "reset-rules", "smart-meter", role="operator")
    assert "smart-meter (built-in): anomaly: anomalous for 3 readings" in reset.output
