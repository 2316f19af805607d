"""Models from other packages, found through the ``twinfleet.models`` entry-point group.

Each test writes a real installed-distribution layout (``*.dist-info`` with
``entry_points.txt``) and its module into a directory on ``sys.path``, which is what pip
leaves behind, so ``importlib.metadata`` finds it as it would find a pip-installed plugin.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from twinfleet.models import ModelRegistry, SelectedInputs, default_registry

MODULE = '''
from twinfleet.models import ModelSpec, Verdict


class Ceiling:
    """Anomalous above a fixed level."""

    name = "ceiling"

    def __init__(self, limit):
        self.limit = limit

    def update(self, values, ts):
        worst = max(values, key=values.get)
        return Verdict(values[worst] / self.limit, values[worst] > self.limit, worst)

    def state(self):
        return {"limit": self.limit}


CEILING_SPEC = ModelSpec(
    name="ceiling",
    create=lambda params: Ceiling(float(params.get("limit", 100.0))),
    restore=lambda state: Ceiling(float(state["limit"])),
    description="above a fixed level",
    params={"limit": 100.0},
    inputs=("spo2", "heart_rate"),
    version="2",
)
NOT_A_SPEC = 42
'''


def install(site: Path, dist: str, module: str, source: str, entries: dict[str, str]) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[twinfleet.models]\n{lines}\n")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    sys.path.insert(0, str(tmp_path))
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("tf_plugin_")]:
            del sys.modules[name]


def test_an_installed_plugin_is_registered_with_its_declared_inputs(site: Path) -> None:
    install(
        site,
        "tf-plugin-level",
        "tf_plugin_level",
        MODULE,
        {"ceiling": "tf_plugin_level:CEILING_SPEC"},
    )
    registry = default_registry()
    assert {"combined", "ewma", "ceiling", "mad", "stuck"} <= set(registry)
    assert registry.plugin_errors == {}
    spec = registry.spec("ceiling")
    assert spec.describe() == {
        "name": "ceiling",
        "version": "2",
        "description": "above a fixed level",
        "params": {"limit": 100.0},
        "inputs": ["spo2", "heart_rate"],
        "pooled": False,
    }
    model = registry.create("ceiling", {"limit": 120})
    assert isinstance(model, SelectedInputs)
    # Only the declared inputs reach the model: the huge "steps" counter is not its business.
    assert model.update({"heart_rate": 130.0, "steps": 10_000.0}, 1.0) == (
        130 / 120,
        True,
        "heart_rate",
    )
    # A reading without its inputs leaves the verdict as it was.
    assert model.update({"steps": 3.0}, 2.0) == (130 / 120, True, "heart_rate")
    again = registry.restore("ceiling", model.state())
    assert again.update({"spo2": 97.0}, 3.0) == (97 / 120, False, "spo2")
    assert "ceiling" not in default_registry(plugins=False)


def test_broken_plugins_are_skipped_and_reported(site: Path) -> None:
    install(
        site,
        "tf-plugin-broken",
        "tf_plugin_broken",
        MODULE,
        {
            "missing": "tf_plugin_broken:NO_SUCH_NAME",
            "number": "tf_plugin_broken:NOT_A_SPEC",
            "gone": "tf_plugin_nowhere:SPEC",
            "ceiling": "tf_plugin_broken:CEILING_SPEC",
        },
    )
    registry = ModelRegistry()
    assert "ceiling" in registry.load_plugins()  # beside any plugin installed for real
    assert set(registry.plugin_errors) == {"missing", "number", "gone"}
    assert "AttributeError" in registry.plugin_errors["missing"]
    assert "is a int, not a ModelSpec" in registry.plugin_errors["number"]
    assert "ModuleNotFoundError" in registry.plugin_errors["gone"]
    # A second package claiming a taken name is refused, the first one stays.
    assert registry.load_plugins() == []
    assert "already registered" in registry.plugin_errors["ceiling"]
