"""The pytest plugin: fixtures ``paysim``, ``paysim_session``, ``webhook_inbox``; marker ``paysim``.

Opt in with ``-p paysim.testing`` or ``pytest_plugins = ["paysim.testing"]``
in a conftest. (Installed, paysim also registers this module as the
``pytest11`` plugin ``paysim``; it only defines fixtures and a marker, so a
suite that does not ask for them is not affected.)

* ``paysim``: a simulator of its own for one trio test (pytest-trio), in the
  test's loop: with ``autojump_clock`` nothing sleeps for real. Settings come
  from ``@pytest.mark.paysim(**settings)`` (``run_paysim``'s keywords).
* ``paysim_session``: one simulator for the whole session, on the thread
  runner (real time; ``advance`` jumps), and for each test a fresh isolated
  scope of it (``SyncPaysim``): its own webhook inbox, ids and events. The
  marker may set ``default_scenario`` for the test's scope; other settings
  need a simulator of their own. Works from synchronous and asyncio tests.
* ``webhook_inbox``: the ``paysim`` fixture's inbox.

Importing this module imports nothing of paysim until a fixture runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from paysim.testing.inbox import Inbox
    from paysim.testing.runner import SyncPaysim
    from paysim.testing.sim import Paysim

MARKER = "paysim(**settings): settings of the test's paysim simulator (run_paysim's keywords)"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def _marked(request: pytest.FixtureRequest) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for mark in reversed(list(request.node.iter_markers("paysim"))):
        settings.update(mark.kwargs)  # the closest mark wins
    return settings


@pytest.fixture
async def paysim(request: pytest.FixtureRequest) -> AsyncIterator[Paysim]:
    """A running simulator for this test, in its trio loop; stopped after it."""
    from paysim.testing.sim import run_paysim

    async with run_paysim(**_marked(request)) as sim:
        yield sim


@pytest.fixture
def webhook_inbox(paysim: Paysim) -> Inbox:
    """The ``paysim`` fixture's webhook inbox (``paysim.webhooks``)."""
    return paysim.webhooks


@pytest.fixture(scope="session")
def _paysim_session_root() -> Iterator[SyncPaysim]:
    from paysim.testing.runner import running

    with running() as sim:
        yield sim


@pytest.fixture
def paysim_session(
    _paysim_session_root: SyncPaysim, request: pytest.FixtureRequest
) -> Iterator[SyncPaysim]:
    """A fresh isolated scope of the session's simulator (thread runner) for this test."""
    marked = _marked(request)
    scenario = marked.pop("default_scenario", None)
    if marked:
        raise pytest.UsageError(
            f"paysim_session shares one simulator: {sorted(marked)} need the paysim fixture"
        )
    scope = _paysim_session_root.scoped(default_scenario=scenario)
    try:
        yield scope
    finally:
        scope.close()


__all__ = [
    "_paysim_session_root",
    "paysim",
    "paysim_session",
    "pytest_configure",
    "webhook_inbox",
]
