"""Simulated time: the one place SIMULATION_TIME_SCALE is applied.

A simulated duration (an outcome's delay, the intent's TTL, a scheduled
SimulateWebhook, a webhook retry or a chaos hold) becomes a real one through
``SimClock.real``; nothing else multiplies by the scale. Stamps stay real
wall-clock times. Pure: the wiring builds one from the settings
(``SimulationSettings.clock``) and passes it to whoever waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from paysim.domain.models import Payment


@dataclass(frozen=True, slots=True)
class SimClock:
    """``scale`` compresses time: 0.001 makes a 15-minute expiry take 0.9 s."""

    scale: float = 1.0

    def real(self, simulated_s: float) -> float:
        """How long ``simulated_s`` of simulated time takes, in real seconds."""
        return simulated_s * self.scale

    def answers_at(self, payment: Payment) -> float:
        """When the simulated PG answers a pending payment (wall clock).

        The outcome's delay counts from creation; for a PG that never answers
        that is the intent's expiry.
        """
        return payment.created_at + self.real(payment.outcome.delay_s)
