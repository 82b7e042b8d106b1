"""Chaos for the caller: API-side faults, fault timelines and the reconciliation ledger.

Rooms: ``plan`` (what to inject, pure values), ``settings`` (CHAOS_API_*),
``policy`` (one seeded decision per call, at the gRPC edge), ``timeline``
(phases of plans on a clock, from TOML; shipped ``examples``), ``ledger``
(double charges, lost answers, abandoned intents), ``metrics``. The wiring
builds them only when CHAOS_API_* asks (``wiring.open_api_chaos``); the HTTP
routes are ``paysim.entrypoints.fault_routes``.
"""
