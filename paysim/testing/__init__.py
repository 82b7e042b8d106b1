"""paysim.testing: use paysim from your own test suite, in-process, in virtual time.

In a trio test (pytest-trio; with ``autojump_clock`` nothing sleeps for real)::

    async def test_declined_card_releases_the_seat(autojump_clock):
        async with paysim.testing.run_paysim(default_scenario="fail") as sim:
            intent = await sim.create_intent(50_000)
            hook = await sim.webhooks.next(intent.payment_intent_id, status="failed")

From synchronous or asyncio code, in real time, on a background thread::

    with paysim.testing.running() as sim:
        stub, channel = paysim.testing.grpc_stub(sim.grpc_target)

With pytest, ``-p paysim.testing`` (or ``pytest_plugins = ["paysim.testing"]``)
adds the fixtures ``paysim``, ``paysim_session`` and ``webhook_inbox`` and the
marker ``@pytest.mark.paysim(**settings)``; see ``paysim.testing.plugin`` and
the README's "Testing your service with paysim".

The modules: ``sim`` (``run_paysim``, ``Paysim``), ``runner`` (``running``,
the thread runner), ``receiver`` and ``inbox`` (webhooks), ``events``,
``clients`` (grpcio stubs), ``settings``, ``plugin``. Importing this package
is cheap: the names below load their modules on first use, so the pytest
plugin costs nothing to a run that does not use it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from paysim.testing.clients import aio_stub, grpc_stub
    from paysim.testing.events import Event, EventLog
    from paysim.testing.feed import NotReceived
    from paysim.testing.inbox import Delivery, Inbox, WebhookNotAuthentic
    from paysim.testing.runner import SyncPaysim, running
    from paysim.testing.settings import build_settings
    from paysim.testing.sim import Paysim, run_paysim

_WHERE = {
    "run_paysim": "sim",
    "Paysim": "sim",
    "running": "runner",
    "SyncPaysim": "runner",
    "grpc_stub": "clients",
    "aio_stub": "clients",
    "Event": "events",
    "EventLog": "events",
    "Delivery": "inbox",
    "Inbox": "inbox",
    "WebhookNotAuthentic": "inbox",
    "NotReceived": "feed",
    "build_settings": "settings",
}

__all__ = [
    "Delivery",
    "Event",
    "EventLog",
    "Inbox",
    "NotReceived",
    "Paysim",
    "SyncPaysim",
    "WebhookNotAuthentic",
    "aio_stub",
    "build_settings",
    "grpc_stub",
    "run_paysim",
    "running",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'paysim.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"paysim.testing.{module}"), name)


# ``-p paysim.testing`` names this package as the plugin: its hooks are the plugin's.
from paysim.testing.plugin import *  # noqa: E402, F403
