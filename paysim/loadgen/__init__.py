"""``paysim bench``: a ghz-style gRPC load generator for ``payment.v1.PaymentService``.

Modules, each named for its job: ``options`` (the flags, checked), ``calls``
(the six methods), ``template`` (per-request JSON templating), ``client``
(the worker: grpc.aio, closed or open loop), ``pool`` (workers in a thread or
in processes), ``results`` (histograms, status codes, errors, timeline),
``bottleneck`` (who limited the run), ``procstat`` (CPU from /proc),
``spawn`` (``--spawn``: the server under test), ``progress`` (the live
line), ``report`` and ``html_report`` (text, JSON, HTML), ``main`` (the
orchestration).
Nothing is imported or opened at package import.
"""
