"""``paysim chaos``: scenario runs that check the promises a platform builds on.

It drives a weighted mix of payment journeys at a fixed rate against a paysim
it starts (or a running one), injects faults on every side of it, and then
checks, from what it recorded, that the promises held:

* every accepted intent reached a terminal status;
* GetPaymentStatus agrees with the last webhook (as a consumer folds them);
* every change was delivered at least once, with a valid signature and a
  stable X-Webhook-Id;
* every change reached the SQS queue;
* RANDOM's approve ratio is within statistical bounds;
* nothing was delivered for a cancelled timer;
* every payment ended where its scenario says;
* a SIGTERM drained everything and exited 0.

Faults: a webhook receiver that answers 5xx, times out, resets connections or
is down for a while; duplicate and out-of-order delivery injected by the
server (CHAOS_WEBHOOK_* settings); an EventBridge outage; SIGTERM of the
server. See the README's Chaos section for usage.

Modules: ``options`` (the command line), ``scenarios`` (the journeys),
``gate`` (a switchable TCP service), ``receiver`` (the webhook receiver and
its faults), ``events`` (SQS reader, PutEvents sink, outage proxy),
``stack`` (moto and server processes), ``server_env`` (the settings of the server
``paysim chaos`` starts, and why), ``driver`` (the load), ``invariants``
(the checks, pure), ``report`` and ``html_report`` (outputs), ``run`` (the
phases), ``command`` (``paysim chaos``).
"""
