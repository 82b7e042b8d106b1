"""Request templating: the ``--data`` JSON is a text template, rendered per request.

As in ghz, the template is *text*: placeholders are replaced first and the
result is then parsed as JSON, so the quoting decides the JSON type.
``"reservation_id": "rsv_{{n}}"`` is a string, ``"delay_seconds": {{rand_int 1
5}}`` a number and ``"force_trigger": {{choice true false}}`` a boolean. The
JSON becomes the call's request message with
``google.protobuf.json_format.ParseDict``, so field names and enum names are
those of the proto's JSON mapping (``"scenario": "PAYMENT_SCENARIO_APPROVE"``).

Placeholders (ghz's spelling in brackets works too):

===========================  ==========================================================
``{{n}}``                    request number, from 0, unique across all worker processes
                             (warm-up requests take the first numbers)
                             [``{{.RequestNumber}}``]
``{{worker}}``               index of the worker process (0 .. procs-1) [``{{.WorkerID}}``]
``{{uuid}}``                 a random version-4 UUID [``{{.UUID}}``]
``{{timestamp}}``            Unix time in whole seconds [``{{.TimestampUnix}}``]
``{{timestamp_ms}}``         Unix time in milliseconds [``{{.TimestampUnixMilli}}``]
``{{rand_int A B}}``         a random integer with A <= x <= B [``{{randomInt A B}}``]
``{{rand_string K}}``        K random letters and digits [``{{randomString K}}``]
``{{choice A B ...}}``       one of the words, at random
``{{cycle A B ...}}``        the words in turn: word ``n mod count`` (deterministic mixes)
``{{intent_id}}``            a payment intent made before the run (``--intents N``), in turn
===========================  ==========================================================

Randomness comes from one ``random.Random`` per worker, seeded from ``--seed``
(and the worker index) when given, so a seeded run sends the same requests.

A template without placeholders is parsed once and its bytes are reused: the
generator then costs nothing per request for the body. Otherwise one render
costs about 15 µs: the text is split into pieces once, and a render joins
them, parses the JSON and builds the message.
"""

from __future__ import annotations

import json
import random
import re
import string
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message


class TemplateError(Exception):
    """The template or the JSON it renders is wrong; ``str()`` is one line for the user."""


@dataclass
class Context:
    """What a placeholder may depend on: the request number and the worker's state."""

    n: int = 0
    worker: int = 0
    rng: random.Random = field(default_factory=random.Random)
    intents: Sequence[str] = ()


Render = Callable[[Context], str]
_ALPHANUMERIC = string.ascii_letters + string.digits


def _intent(ctx: Context) -> str:
    if not ctx.intents:
        raise TemplateError("{{intent_id}} needs payment intents made first: give --intents N")
    return ctx.intents[ctx.n % len(ctx.intents)]


def _integer(word: str, where: str) -> int:
    try:
        return int(word)
    except ValueError:
        raise TemplateError(f"{where}: {word!r} is not an integer") from None


def _compile_call(name: str, args: list[str], where: str) -> Render:
    """One placeholder as a function of the context; arity and arguments checked now."""
    simple: dict[str, Render] = {
        "n": lambda ctx: str(ctx.n),
        "worker": lambda ctx: str(ctx.worker),
        "uuid": lambda ctx: str(uuid.UUID(int=ctx.rng.getrandbits(128), version=4)),
        "timestamp": lambda ctx: str(int(time.time())),
        "timestamp_ms": lambda ctx: str(int(time.time() * 1000)),
        "intent_id": _intent,
    }
    if name in simple:
        if args:
            raise TemplateError(f"{where}: {name} takes no arguments")
        return simple[name]
    if name == "rand_int":
        if len(args) != 2:
            raise TemplateError(f"{where}: rand_int takes two integers, A and B")
        low, high = _integer(args[0], where), _integer(args[1], where)
        if low > high:
            raise TemplateError(f"{where}: rand_int needs A <= B")
        return lambda ctx: str(ctx.rng.randint(low, high))
    if name == "rand_string":
        if len(args) != 1 or _integer(args[0], where) < 0:
            raise TemplateError(f"{where}: rand_string takes one length >= 0")
        k = int(args[0])
        return lambda ctx: "".join(ctx.rng.choices(_ALPHANUMERIC, k=k))
    if name in ("choice", "cycle"):
        if not args:
            raise TemplateError(f"{where}: {name} needs at least one word")
        words = tuple(args)
        if name == "choice":
            return lambda ctx: ctx.rng.choice(words)
        return lambda ctx: words[ctx.n % len(words)]
    raise TemplateError(f"{where}: unknown placeholder {name!r}; known: {', '.join(NAMES)}")


NAMES = (
    "n",
    "worker",
    "uuid",
    "timestamp",
    "timestamp_ms",
    "rand_int",
    "rand_string",
    "choice",
    "cycle",
    "intent_id",
)
_GHZ_ALIASES = {
    ".RequestNumber": "n",
    ".WorkerID": "worker",
    ".UUID": "uuid",
    ".TimestampUnix": "timestamp",
    ".TimestampUnixMilli": "timestamp_ms",
    "randomInt": "rand_int",
    "randomString": "rand_string",
}
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)


def _compile_text(text: str) -> list[str | Render]:
    """Split ``text`` into literal pieces and placeholder functions."""
    parts: list[str | Render] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        if match.start() > position:
            parts.append(text[position : match.start()])
        words = match.group(1).split()
        if not words:
            raise TemplateError(f"empty placeholder {match.group(0)!r}")
        name = _GHZ_ALIASES.get(words[0], words[0])
        parts.append(_compile_call(name, words[1:], match.group(0)))
        position = match.end()
    if position < len(text):
        parts.append(text[position:])
    return parts


def uses(text: str, name: str) -> bool:
    """Whether ``text`` has a ``name`` placeholder (under either spelling)."""
    for match in _PLACEHOLDER.finditer(text):
        words = match.group(1).split()
        if words and _GHZ_ALIASES.get(words[0], words[0]) == name:
            return True
    return False


class TextTemplate:
    """A compiled text template: ``render(ctx)`` gives the text for one request."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._parts = _compile_text(text)
        self.static = all(isinstance(p, str) for p in self._parts)

    def render(self, ctx: Context) -> str:
        if self.static:
            return self.text
        return "".join(p if isinstance(p, str) else p(ctx) for p in self._parts)


_WELL_KNOWN = "google.protobuf."  # Timestamp, Duration, wrappers: ParseDict checks them


def _kind(value: Any) -> str:
    """How JSON calls ``value``'s type, for an error message."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else "null"


def _expected(field: FieldDescriptor) -> str:
    """What JSON value ``field`` takes (one item of a repeated field)."""
    if field.message_type is not None:
        return f"an object ({field.message_type.full_name})"
    if field.enum_type is not None:
        return f"a {field.enum_type.full_name} name, like {field.enum_type.values[-1].name!r}"
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return "a string"
    return "true/false" if field.type == FieldDescriptor.TYPE_BOOL else "a number"


def _fits(field: FieldDescriptor, value: Any) -> bool:
    if field.message_type is not None:
        return field.message_type.full_name.startswith(_WELL_KNOWN) or isinstance(value, dict)
    if field.enum_type is not None:
        return isinstance(value, str | int) and not isinstance(value, bool)
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return isinstance(value, str)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return isinstance(value, bool)
    # numbers; proto3 JSON also accepts them as text ("5", an int64 as a string)
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_shape(doc: dict[str, Any], descriptor: Descriptor, path: str = "") -> None:
    """Raise TemplateError naming the first field whose JSON value has the wrong
    type (``amount: expected an object (common.v1.Money), got a number``);
    unknown fields and bad values within the right type are left to ParseDict."""
    for key, value in doc.items():
        field = descriptor.fields_by_name.get(key) or descriptor.fields_by_camelcase_name.get(key)
        if field is None or value is None:
            continue
        where = f"{path}{key}"
        is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
        if is_map:
            if not isinstance(value, dict):
                raise TemplateError(f"{where}: expected an object (a map), got {_kind(value)}")
            continue
        if field.is_repeated:
            if not isinstance(value, list):
                raise TemplateError(
                    f"{where}: expected a list of {_expected(field)}, got {_kind(value)}"
                )
            items = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
        else:
            items = [(where, value)]
        for item_where, item in items:
            if not _fits(field, item):
                raise TemplateError(f"{item_where}: expected {_expected(field)}, got {_kind(item)}")
            if isinstance(item, dict) and field.message_type is not None:
                check_shape(item, field.message_type, f"{item_where}.")


def _to_message(text: str, message_type: type[Message]) -> Message:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise TemplateError(f"not valid JSON after templating ({exc})") from None
    if not isinstance(doc, dict):
        raise TemplateError(f"must be a JSON object, got {type(doc).__name__}")
    check_shape(doc, message_type.DESCRIPTOR)  # type: ignore[arg-type]
    try:
        return json_format.ParseDict(doc, message_type())
    except json_format.ParseError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else "cannot be parsed"
        raise TemplateError(problem) from None


class RequestTemplate:
    """``--data`` compiled for one request type: ``body(ctx)`` is the serialized message.

    Raises ``TemplateError`` at construction for a bad placeholder, and from
    ``body`` when a rendered request is not valid JSON or does not fit the type.
    """

    def __init__(self, text: str, message_type: type[Message]) -> None:
        self._template = TextTemplate(text)
        self._type = message_type
        self._static: bytes | None = None
        if self._template.static:
            self._static = _to_message(text, message_type).SerializeToString()

    @property
    def static(self) -> bool:
        return self._static is not None

    def message(self, ctx: Context) -> Message:
        return _to_message(self._template.render(ctx), self._type)

    def body(self, ctx: Context) -> bytes:
        if self._static is not None:
            return self._static
        return self.message(ctx).SerializeToString()


class MetadataTemplate:
    """``--metadata`` (a JSON object of strings) with templated values."""

    def __init__(self, pairs: dict[str, str]) -> None:
        self._pairs = [(key.lower(), TextTemplate(value)) for key, value in pairs.items()]
        self._static = tuple((k, t.text) for k, t in self._pairs) if self.static else None

    @property
    def static(self) -> bool:
        return all(t.static for _, t in self._pairs)

    def render(self, ctx: Context) -> tuple[tuple[str, str], ...] | None:
        if not self._pairs:
            return None
        if self._static is not None:
            return self._static
        return tuple((key, t.render(ctx)) for key, t in self._pairs)


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """Check that ``text`` is a JSON object (placeholders count as their rendered text)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise TemplateError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise TemplateError(f"{what}: must be a JSON object")
    return doc
