"""The reservation worker (``paysim worker``): a small application of its own.

It reads payment events that EventBridge delivers to SQS and tells the
reservation service to confirm or cancel. Its rooms:

* ``app``: the process: wiring, root nursery, HTTP probes/metrics, shutdown;
* ``consumer``: ``ReservationWorker``, the pollers, handlers and deleters;
* ``sqs_queue``: the SQS adapter (boto3 in threads behind a CapacityLimiter);
* ``reservations``: the reservation service's port and its PATCH;
* ``dedup``: de-duplication by EventBridge event id;
* ``metrics``: the ``paysim_worker_*`` series in the worker's own registry.

It shares ``paysim.entrypoints.http`` (the endpoint), ``paysim.config`` and
``paysim.process`` (signals, exit status) with the API, and reads events
with ``paysim.domain.event_parsing``. Importing it opens nothing.
"""
