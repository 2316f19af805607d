"""twinfleet: an actor-based, distributed digital-twin runtime for IoT fleets, on Ray.

``from twinfleet import Runtime`` is the entry point. The runtime (and with it Ray) is imported
on first use of that name, so ``twinfleet.twins`` and ``twinfleet.models`` stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Runtime", "TwinHandle", "__version__"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from twinfleet.runtime import Runtime, TwinHandle


def __getattr__(name: str) -> Any:
    # PEP 562: keep Ray out of the import of the pure layers (twins/, models/).
    if name in ("Runtime", "TwinHandle"):
        from twinfleet import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'twinfleet' has no attribute {name!r}")
