"""``create_app``'s wiring: what it does to the process that embeds it."""

from __future__ import annotations

import gc

import pytest
from helpers import Served

from twinfleet.api.app import create_app

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


@pytest.mark.parametrize("freeze_heap", [False, True])
async def test_the_heap_is_frozen_only_for_a_server_that_asks(
    served: Served, freeze_heap: bool
) -> None:
    gc.unfreeze()
    app = create_app(served.runtime, served.store, freeze_heap=freeze_heap)
    try:
        async with app.router.lifespan_context(app):
            assert (gc.get_freeze_count() > 0) is freeze_heap
    finally:
        gc.unfreeze()
