"""Reading environment variables: one typed, validated value per call.

``EnvReader`` is what ``Settings.from_env`` reads with. Each method takes the
variable's name and its default (the settings dataclass's field default, so
every default is written once, in ``paysim.config``) and raises ``ConfigError``
naming the variable for a bad value. Durations are milliseconds in the
environment (``*_MS``) and seconds (float) in the program: ``millis`` takes
and returns seconds. Values that may hold a secret are never echoed.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TypeVar

T = TypeVar("T")

STORE_SCHEMES = ("redis", "rediss")


class ConfigError(Exception):
    """One environment variable has a bad value. ``str()`` is the one-line message."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class EnvReader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _get(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value if value else None

    def _parse(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self._get(name)
        return default if raw is None else parse(raw)

    def string(self, name: str, default: str, nonempty: bool = False) -> str:
        raw = self._env.get(name)
        if raw is None:
            return default
        if nonempty and not raw.strip():
            raise ConfigError(name, "must not be empty")
        return raw.strip()

    def optional_string(self, name: str) -> str | None:
        return self._get(name)

    def integer(self, name: str, default: int, minimum: int | None = None) -> int:
        def parse(raw: str) -> int:
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(name, f"expected an integer, got {raw!r}") from None
            if minimum is not None and value < minimum:
                raise ConfigError(name, f"must be at least {minimum}, got {value}")
            return value

        return self._parse(name, default, parse)

    def optional_integer(self, name: str) -> int | None:
        raw = self._get(name)
        return None if raw is None else self.integer(name, 0)

    def port(self, name: str, default: int) -> int:
        """A TCP port, 0-65535 (0: any free one); one wording for every bad value."""

        def parse(raw: str) -> int:
            try:
                value = int(raw)
            except ValueError:
                value = -1
            if not 0 <= value <= 65535:
                raise ConfigError(name, f"must be a TCP port (0-65535), got {raw!r}")
            return value

        return self._parse(name, default, parse)

    def millis(self, name: str, default_s: float, minimum: int = 0) -> float:
        """A whole number of milliseconds (at least ``minimum``), in seconds."""
        if self._get(name) is None:
            return default_s
        return self.integer(name, 0, minimum) / 1000.0

    def scale(self, name: str, default: float) -> float:
        def parse(raw: str) -> float:
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(name, f"expected a number, got {raw!r}") from None
            if not 1e-6 <= value <= 1.0:
                raise ConfigError(name, f"must be between 0.000001 and 1, got {raw}")
            return value

        return self._parse(name, default, parse)

    def rate(self, name: str, default: float) -> float:
        def parse(raw: str) -> float:
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(name, f"expected a number between 0 and 1, got {raw!r}") from None
            if not 0.0 <= value <= 1.0:
                raise ConfigError(name, f"must be between 0 and 1, got {value}")
            return value

        return self._parse(name, default, parse)

    def thresholds(self, name: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
        def parse(raw: str) -> tuple[int, int, int]:
            parts = raw.split(",")
            if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
                raise ConfigError(
                    name, f"expected three whole numbers like 2000,10,1000; got {raw!r}"
                )
            a, b, c = (int(p) for p in parts)
            if a < 1:
                raise ConfigError(name, "the first threshold must be at least 1")
            return a, b, c

        return self._parse(name, default, parse)

    def secrets(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = self._env.get(name)
        if raw is None:
            return default
        values = tuple(part.strip() for part in raw.split(","))
        if not values or not all(values):
            raise ConfigError(name, "must hold one or more non-empty, comma-separated secrets")
        for value in values:
            if value.startswith("whsec_"):
                try:
                    base64.b64decode(value[len("whsec_") :], validate=True)
                except ValueError:
                    raise ConfigError(
                        name, "a whsec_ secret must be base64 after the prefix"
                    ) from None
        return values

    def host_list(self, name: str) -> frozenset[str]:
        raw = self._get(name)
        if raw is None:
            return frozenset()
        return frozenset(h.strip().lower() for h in raw.split(",") if h.strip())

    def boolean(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            value = raw.lower()
            if value in ("1", "true", "yes", "on"):
                return True
            if value in ("0", "false", "no", "off"):
                return False
            raise ConfigError(name, f"expected true or false, got {raw!r}")

        return self._parse(name, default, parse)

    def store_url(self, name: str, alias: str) -> str | None:
        """STORE_URL, else its alias REDIS_URL; never echoes the value (it may hold a password)."""
        used = name if self._get(name) is not None else alias
        raw = self._get(used)
        if raw is None:
            return None
        if raw == "memory":
            return None
        try:
            parts = urllib.parse.urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ConfigError(used, "expected redis://host:port[/db] or rediss://...") from None
        if parts.scheme not in STORE_SCHEMES or not parts.hostname:
            raise ConfigError(
                used, "expected redis://host:port[/db], rediss://... (TLS), or memory"
            )
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ConfigError(used, "the path must be a database number, like /0")
        return raw

    def key_prefix(self, name: str, default: str) -> str:
        value = self.string(name, default, nonempty=True)
        if not all(c.isalnum() or c in "-_.:" for c in value):
            raise ConfigError(name, "use letters, digits and - _ . : only")
        return value

    def optional_url(self, name: str) -> str | None:
        raw = self._get(name)
        return None if raw is None else self.url(name, raw)

    def url(self, name: str, default: str) -> str:
        def parse(raw: str) -> str:
            try:
                parts = urllib.parse.urlsplit(raw)
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError:
                raise ConfigError(name, f"expected an http(s) URL, got {raw!r}") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(name, f"expected an http(s) URL with a host, got {raw!r}")
            return raw.rstrip("/")

        return self._parse(name, default, parse)

    def choice(self, name: str, choices: list[str] | tuple[str, ...], default: str) -> str:
        def parse(raw: str) -> str:
            value = raw.lower()
            if value not in choices:
                raise ConfigError(name, f"expected one of {', '.join(choices)}, got {raw!r}")
            return value

        return self._parse(name, default, parse)
