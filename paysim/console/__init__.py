"""The live console at ``/console`` on the HTTP endpoint (see README "Console").

``recorder`` remembers recent payments and their timelines (fed by the store's
inserts and by the outbox as a channel), ``hub`` fans live updates out to each
page through a bounded queue, ``api`` and ``actions`` answer the page (reads,
and actions through the service's use cases), ``auth`` guards it, ``routes``
registers it, ``static/`` is the page itself: plain HTML, CSS and JS.
"""
