"""A paysim app with API chaos on (zero rates unless a test sets a plan), and its HTTP admin."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from paysim.config import Settings
from paysim.faults.plan import FaultPlan
from paysim.faults.settings import ApiChaosSettings
from tests.grpc_helpers import make_settings


def chaos_settings(plan: dict[str, Any] | None = None, seed: int = 17) -> Settings:
    chaos = ApiChaosSettings(enabled=True, plan=FaultPlan.from_dict(plan or {}), seed=seed)
    return dataclasses.replace(make_settings(), api_chaos=chaos)


@pytest.fixture
def settings() -> Settings:
    return chaos_settings()


@pytest.fixture
async def admin(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{app.http_port}", trust_env=False, timeout=10.0
    ) as client:
        yield client
