"""``__all__`` is the public surface: every name in it exists, and ``import *`` works."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["twinfleet.twins", "twinfleet.models", "twinfleet.errors"]


@pytest.mark.parametrize("name", PACKAGES)
def test_star_import_works(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    module = importlib.import_module(name)
    assert set(module.__all__) <= set(namespace)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_exists_once(name: str) -> None:
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__)
