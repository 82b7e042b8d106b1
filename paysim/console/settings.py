"""The console's settings: whether it is served, its token, read-only mode.

* CONSOLE_ENABLED (default true): set false to serve no console at all.
* CONSOLE_TOKEN: when set, every console request needs it (``Authorization:
  Bearer …`` or the cookie the login form sets). In production the console
  is served only when it is set.
* CONSOLE_READ_ONLY (default false): the page shows, the actions answer 403.
* CONSOLE_WEBHOOK_URL: the create form's default webhook URL (the dev
  stack's receiver).

Pure values; ``paysim.config`` reads them with the rest of the settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from paysim.env_reader import EnvReader

DEV_RECEIVER_URL = "http://127.0.0.1:8050/webhooks"


@dataclass(frozen=True)
class ConsoleSettings:
    enabled: bool = True
    token: str | None = field(default=None, repr=False)
    read_only: bool = False
    default_webhook_url: str = DEV_RECEIVER_URL

    def served(self, *, production: bool) -> bool:
        """Whether the routes exist: off in production unless a token guards them."""
        return self.enabled and (self.token is not None or not production)


def read_console(r: EnvReader, d: ConsoleSettings) -> ConsoleSettings:
    return ConsoleSettings(
        enabled=r.boolean("CONSOLE_ENABLED", d.enabled),
        token=r.optional_string("CONSOLE_TOKEN") or None,
        read_only=r.boolean("CONSOLE_READ_ONLY", d.read_only),
        default_webhook_url=r.url("CONSOLE_WEBHOOK_URL", d.default_webhook_url),
    )
