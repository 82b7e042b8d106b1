"""Delivery: how a status change leaves paysim, after the outbox has kept it.

Two channels, each a notifier (``announces``/``notify``) that only delivers and
reports each change it is finished with through ``on_done``; the outbox decides
what that means for the store. The app root owns the clients they send through
and the tasks that run them.

Rooms (import what you need from the module; this package imports nothing)::

    webhook_dispatcher   WebhookDispatcher: the notifier, its workers, the retry policy
    webhook_queue        one FIFO per payment, bounded in all: queueing and "idle"
    webhook_sender       one signed POST to a pinned address, classified
    webhook_chaos        injected duplicates and reordering (development only)
    pinning              URL -> Target, host -> SSRF-approved address (cached)
    ssrf, target         the SSRF policy and the sendable-URL parse (also used at the edge)
    signing              the contract's signature headers, and ``verify`` for consumers
    journal              the last attempts per payment, as data (served by entrypoints)
    event_publisher      EventPublisher: EventBridge PutEvents, batched and retried
    event_batches        entries, batch limits, why a call failed (pure)

Every retrier here waits by a ``paysim.backoff.Schedule``; both channels record
through ``Metrics`` (``metrics.webhooks``, ``metrics.events``, defined in
``paysim.observability.delivery_metrics``). Nothing here imports an entrypoint.
"""
