"""Hostile requests for every operation of an OpenAPI document: a fixed sweep and a strategy.

A request makes one *target* hostile (a parameter, a body field, the whole body, the cookie)
and gives every other parameter a valid value or leaves it out, so the hostile value is not
masked by another parameter's validation error. Hostile kinds: NUL and other control characters,
lone surrogates, over-long strings, wrong types, huge and negative numbers, moments at the edge
of the calendar, and raw bytes that are not UTF-8 (URL values are percent-encoded byte by byte).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote_from_bytes

from hypothesis import strategies as st

from syncguard.settings import Settings

Value = str | bytes

#: Characters that have broken text handling somewhere: NUL, C0/C1 controls, DEL, separators,
#: surrogates, BOM, non-characters, quoting and escaping characters.
HOSTILE_CHARS = (
    "\x00", "\x01", "\x08", "\t", "\n", "\r", "\x1b", "\x7f", "\x85", "\u2028",
    "\ud800", "\udfff", "\ufeff", "\ufffe", "'", '"', "%", "\\", ";", "&", "=",
)  # fmt: skip
#: One value of each hostile kind, tried by the sweep on every parameter.
HOSTILE_SAMPLES: dict[str, Value] = {
    "nul": "sgk_\x00abc",
    "control": "a\x01\x1b\x7f\x85b",
    "surrogate": "a\ud800b",
    "over-long": "x" * 5000,
    "not-utf8": b"\xff\xfe\xc3(",
    "empty": "",
    "wrong-type": "[]",
    "huge-number": str(2**70),
    "negative": "-1",
    "extreme-moment": "0001-01-01T00:00:00+23:59",
    "far-moment": "9999-12-31T23:59:59-23:59",
}
#: The same kinds as JSON values of a body field.
HOSTILE_JSON: dict[str, Any] = {
    "nul": "a\u0000b",
    "surrogate": "a\ud800b",
    "control": "\u001b[31m",
    "over-long": "x" * 5000,
    "huge-number": 2**70,
    "list": [],
    "object": {"a": None},
}
#: Whole bodies that no route expects.
HOSTILE_BODIES: dict[str, bytes] = {
    "empty": b"",
    "truncated": b'{"a": ',
    "not-utf8": b"\xff\xfe{}",
    "array": b"[]",
    "null": b"null",
    "nul-escape": b'{"\\u0000": "\\u0000"}',
}
#: Header and cookie values a client can send (no CTLs): Latin-1 bytes that are not UTF-8.
HOSTILE_HEADER_VALUES = (b"sgk_\xff\xfe\xe9", b"x" * 4000, b"sgk_%00abc", b"Bearer")
#: Fields of a Graph change or lifecycle notification (Graph docs, "changeNotification").
GRAPH_FIELDS = (
    "subscriptionId", "clientState", "changeType", "resource", "lifecycleEvent", "tenantId",
    "subscriptionExpirationDateTime",
)  # fmt: skip
#: The dashboard's session cookie.
COOKIE = Settings().dashboard_cookie_name.encode()

hostile_text = st.one_of(
    st.text(st.characters(), max_size=30),
    st.builds(
        lambda head, char, tail: head + char + tail,
        st.text(max_size=10),
        st.just("\x00") | st.sampled_from(HOSTILE_CHARS),
        st.text(max_size=10),
    ),
    st.integers(201, 6000).map(lambda n: "x" * n),
)
hostile_value: st.SearchStrategy[Value] = st.one_of(
    hostile_text,
    st.binary(max_size=24),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(list(HOSTILE_SAMPLES.values())),
)
hostile_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | hostile_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)
#: Header values httpx can send: printable Latin-1, bytes 0x80..0xFF (never UTF-8) included.
header_bytes = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F).strip()
)
moments = st.builds(
    lambda moment, offset: moment if offset is None else moment.replace(tzinfo=timezone(offset)),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    st.none() | st.timedeltas(-timedelta(hours=23, minutes=59), timedelta(hours=23, minutes=59)),
).map(datetime.isoformat)


def url_part(value: Value) -> str:
    """``value`` percent-encoded byte by byte (a lone surrogate becomes invalid UTF-8)."""
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return quote_from_bytes(raw, safe="")


def json_bytes(payload: Any) -> bytes:
    """JSON as a hostile sender writes it (``ensure_ascii`` escapes lone surrogates)."""
    return json.dumps(payload, ensure_ascii=True).encode()


def gmail_body(address: Any, message_id: Any = "m-1", history: Any = 1234) -> bytes:
    """A Pub/Sub push body whose decoded data names ``address``."""
    address = address.decode("latin-1") if isinstance(address, bytes) else address
    message_id = message_id.decode("latin-1") if isinstance(message_id, bytes) else message_id
    data = json_bytes({"emailAddress": address, "historyId": history})
    message = {"data": base64.urlsafe_b64encode(data).decode(), "messageId": message_id}
    return json_bytes({"message": message, "subscription": "projects/p/subscriptions/s"})


def form_body(form: Mapping[str, Value]) -> bytes:
    """``form`` URL-encoded byte by byte."""
    return "&".join(f"{url_part(k)}={url_part(v)}" for k, v in form.items()).encode()


#: Bodies of the routes that read their body themselves (webhooks, login, logout).
raw_bodies = st.one_of(
    hostile_json.map(json_bytes),
    st.dictionaries(st.just("key") | hostile_text, hostile_value, max_size=2).map(form_body),
    st.binary(max_size=200),
    st.builds(gmail_body, hostile_text, hostile_text, hostile_text | st.integers()),
    st.lists(st.fixed_dictionaries({}, optional=dict.fromkeys(GRAPH_FIELDS, hostile_text))).map(
        lambda items: json_bytes({"value": items})
    ),
)
content_types = st.sampled_from(
    [b"application/json", b"application/x-www-form-urlencoded", b"text/plain"]
)


@dataclass(frozen=True)
class Operation:
    """One method and path of an OpenAPI document, with its parameters' and body's schemas."""

    method: str
    path: str
    parameters: tuple[dict[str, Any], ...]
    body_schema: dict[str, Any] | None
    doc: dict[str, Any] = field(repr=False, compare=False, hash=False)

    @property
    def id(self) -> str:
        """``METHOD /path``."""
        return f"{self.method} {self.path}"

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """``schema`` without ``$ref`` or a nullable ``anyOf`` wrapper."""
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            return self.resolve(self.doc["components"]["schemas"][name])
        options = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
        return self.resolve(options[0]) if options else schema

    def body_fields(self) -> dict[str, dict[str, Any]]:
        """The declared JSON body's properties (none when the route reads its body itself)."""
        if self.body_schema is None:
            return {}
        return dict(self.resolve(self.body_schema).get("properties", {}))


def operations(doc: dict[str, Any]) -> list[Operation]:
    """Every operation of ``doc``."""
    found = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            content = op.get("requestBody", {}).get("content", {})
            body = content.get("application/json", {}).get("schema")
            params = tuple(op.get("parameters", ()))
            found.append(Operation(method.upper(), path, params, body, doc))
    return found


def plain_value(op: Operation, schema: dict[str, Any]) -> Any:
    """One value ``schema`` accepts; a UUID is random, so it never names an existing row."""
    schema = op.resolve(schema)
    if "enum" in schema:
        return schema["enum"][0]
    kind, fmt = schema.get("type"), schema.get("format")
    if fmt == "uuid":
        return str(uuid.uuid4())
    if fmt == "date-time":
        return "2026-01-01T00:00:00Z"
    return {"integer": 10, "boolean": True}.get(str(kind), "sync_duration_ms")


def valid_values(op: Operation, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values ``schema`` accepts (or nearly: bounds are not in the document)."""
    schema = op.resolve(schema)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind, fmt = schema.get("type"), schema.get("format")
    if fmt == "uuid":
        return st.uuids().map(str)
    if fmt == "date-time":
        return moments
    if kind == "integer":
        return st.integers(-5, 2000) | st.integers(-(2**70), 2**70)
    if kind == "boolean":
        return st.booleans()
    return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 50))


def as_url_value(value: Any) -> Value:
    """A JSON-ish value as a query or path value."""
    return (
        json.dumps(value)
        if isinstance(value, bool)
        else value
        if isinstance(value, bytes)
        else str(value)
    )


@dataclass(frozen=True)
class HostileRequest:
    """What one request sends."""

    method: str
    url: str
    headers: dict[str, bytes]
    body: bytes | None = None


def build(
    op: Operation,
    values: Mapping[str, Value],
    headers: Mapping[str, bytes],
    body: bytes | None = None,
    content_type: bytes = b"application/json",
) -> HostileRequest:
    """The request of ``op`` with these parameter values (path values substituted)."""
    path, query = op.path, []
    for param in op.parameters:
        name = param["name"]
        if param["in"] == "path":
            path = path.replace("{" + name + "}", url_part(values[name]))
        elif name in values:
            query.append(f"{url_part(name)}={url_part(values[name])}")
    url = path + ("?" + "&".join(query) if query else "")
    all_headers = dict(headers)
    if body is not None:
        all_headers["content-type"] = content_type
    return HostileRequest(op.method, url, all_headers, body)


def required_values(op: Operation) -> dict[str, Value]:
    """A plain value for every required parameter."""
    return {
        p["name"]: as_url_value(plain_value(op, p["schema"]))
        for p in op.parameters
        if p.get("required")
    }


def sweep(op: Operation, headers: Mapping[str, bytes]) -> Iterator[tuple[str, HostileRequest]]:
    """Every (target, kind) of ``op`` once: each parameter, body field, body and cookie."""
    base = required_values(op)
    plain_body = json_bytes({}) if op.body_schema is not None else None
    for param in op.parameters:
        for kind, value in HOSTILE_SAMPLES.items():
            request = build(op, base | {param["name"]: value}, headers, plain_body)
            yield f"{param['name']}={kind}", request
    for name in op.body_fields():
        for kind, value in HOSTILE_JSON.items():
            yield f"body.{name}={kind}", build(op, base, headers, json_bytes({name: value}))
    if op.method == "POST":
        for kind, body in HOSTILE_BODIES.items():
            yield f"body={kind}", build(op, base, headers, body)
    if op.method == "POST" and op.body_schema is None:
        for kind, value in HOSTILE_SAMPLES.items():
            form = form_body({"key": value})
            yield (
                f"form.key={kind}",
                build(op, base, headers, form, b"application/x-www-form-urlencoded"),
            )
            yield f"gmail.emailAddress={kind}", build(op, base, headers, gmail_body(value))
            yield f"gmail.messageId={kind}", build(op, base, headers, gmail_body("a@b.c", value))
        for name in GRAPH_FIELDS:
            graph = json_bytes({"value": [{name: HOSTILE_JSON["nul"]}]})
            yield f"graph.{name}=nul", build(op, base, headers, graph)
    for value in HOSTILE_HEADER_VALUES:
        cookie = {"cookie": COOKIE + b"=" + value}
        yield f"cookie={value[:8]!r}", build(op, base, dict(headers) | cookie, plain_body)


@st.composite
def hostile_requests(
    draw: st.DrawFn, op: Operation, auth: st.SearchStrategy[dict[str, bytes]]
) -> HostileRequest:
    """One request to ``op`` whose drawn target is hostile and whose other inputs are valid."""
    targets = [p["name"] for p in op.parameters] + ["<cookie>"]
    targets += [f"<body>.{name}" for name in op.body_fields()]
    targets += ["<body>"] if op.method == "POST" else []
    target = draw(st.sampled_from(targets))
    values: dict[str, Value] = {}
    for param in op.parameters:
        name = param["name"]
        if name == target:
            values[name] = draw(hostile_value)
        elif param["in"] == "path" or param.get("required") or draw(st.booleans()):
            values[name] = as_url_value(draw(valid_values(op, param["schema"])))
    headers = dict(draw(auth))
    if target == "<cookie>":
        headers["cookie"] = COOKIE + b"=" + draw(header_bytes)
    body, content_type = None, b"application/json"
    if target == "<body>":
        body, content_type = draw(raw_bodies | hostile_json.map(json_bytes)), draw(content_types)
    elif target.startswith("<body>."):
        body = json_bytes({target.split(".", 1)[1]: draw(hostile_json)})
    elif op.method == "POST":
        body = json_bytes({}) if op.body_schema is not None else draw(raw_bodies)
    return build(op, values, headers, body, content_type)
