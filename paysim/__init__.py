"""paysim: a payment-gateway simulator (gRPC API, async outcomes, signed webhooks).

Importing this package opens nothing: every resource is opened inside
``paysim.app.run``'s lifetime.
"""

__version__ = "0.1.0"
