"""kombu's Redis transport, except that a queue entry it cannot parse no longer kills the worker.

Why this module exists (the one place syncguard reaches into kombu's internals): kombu's Redis
channel pops an entry off the queue's list (BRPOP, or RPOP in ``basic_get``) and parses it
with ``json.loads`` before any Celery hook can see it. An entry that is not JSON, or JSON that
is not kombu's envelope (``properties.delivery_tag`` and ``delivery_info``), raises inside
the worker's event loop: the entry is already gone from Redis and the worker process exits
(reported for SQS as celery/kombu#2421; there is no supported hook before that parse).

The seam used here is the channel's Redis client class (``Channel._get_client``): its replies
to BRPOP and RPOP pass through ``envelope_or_wrap``, which returns a valid entry unchanged
and wraps anything else in a well-formed envelope of content type ``UNDECODABLE_CONTENT_TYPE``
carrying the raw bytes. kombu then delivers it like any message (tracked as unacknowledged,
so a worker dying now loses nothing), Celery refuses its content type and calls the
consumer's ``on_decode_error``, where ``tasks.poison`` archives it before acknowledging.

``celeryconfig`` selects this transport (``broker_transport``) for ``redis://`` brokers and its
Sentinel twin (``SentinelTransport``) for ``sentinel://`` ones.
``tests/reliability/test_poison_messages.py`` pushes garbage onto a real queue, through a
real worker and through ``basic_get``: if an upgrade of kombu moves the parse, it fails.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from typing import Any

from kombu.transport import redis as kombu_redis

#: Content type of an envelope wrapped around an entry kombu could not parse.
UNDECODABLE_CONTENT_TYPE = "application/x-syncguard-undecodable"
#: Header of a wrapped entry: why it was wrapped.
WRAPPED_REASON_HEADER = "syncguard_undecodable_reason"
#: Header of a wrapped entry: an id for it, so its archive entry is written once.
WRAPPED_ID_HEADER = "syncguard_undecodable_id"
# kombu's separator between a queue's name and its priority suffix in a list's key.
_PRIORITY_SEP = kombu_redis.Channel.sep


def envelope_or_wrap(entry: bytes | str, list_key: bytes | str) -> bytes | str:
    """``entry`` if kombu can deliver it, else an envelope around its raw bytes (JSON text)."""
    raw = entry.encode("utf-8", "surrogateescape") if isinstance(entry, str) else entry
    try:
        payload = json.loads(raw)
    except ValueError as exc:  # not UTF-8 or not JSON
        return _wrap(raw, list_key, f"not JSON: {exc}")
    problem = _envelope_problem(payload)
    return entry if problem is None else _wrap(raw, list_key, problem)


def _envelope_problem(payload: Any) -> str | None:
    """What keeps kombu's ``virtual.Message`` from being built of ``payload``, or None."""
    if not isinstance(payload, dict):
        return f"a JSON {type(payload).__name__}, not kombu's envelope"
    properties = payload.get("properties")
    if not isinstance(properties, dict) or "delivery_tag" not in properties:
        return "no properties.delivery_tag"
    if not isinstance(properties.get("delivery_info"), dict):
        return "no properties.delivery_info"
    if not isinstance(payload.get("headers"), dict | None):
        return "headers are not an object"
    body, encoding = payload.get("body"), properties.get("body_encoding")
    if body and encoding not in (None, "base64"):
        return f"unknown body_encoding {encoding!r}"
    if body and not isinstance(body, str):
        return "body is not a string"
    if body and encoding == "base64":
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return "body is not base64"
    return None


def _wrap(raw: bytes, list_key: bytes | str, reason: str) -> str:
    key = list_key.decode() if isinstance(list_key, bytes) else list_key
    queue = key.rsplit(_PRIORITY_SEP, 1)[0]
    return json.dumps(
        {
            "body": base64.b64encode(raw).decode("ascii"),
            "content-type": UNDECODABLE_CONTENT_TYPE,
            "content-encoding": "binary",
            "headers": {WRAPPED_ID_HEADER: uuid.uuid4().hex, WRAPPED_REASON_HEADER: reason},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_mode": 2,
                "priority": 0,
                # Our queues are bound to an exchange of their own name (celeryconfig), so a
                # restore after the visibility timeout routes the wrapped entry back here.
                "delivery_info": {"exchange": queue, "routing_key": queue},
            },
        }
    )


class _WrappingRepliesMixin:
    """Redis client replies to the two commands that pop queue entries go through the check."""

    def parse_response(self, connection: Any, command_name: str, **options: Any) -> Any:
        reply = super().parse_response(connection, command_name, **options)  # type: ignore[misc]
        if command_name == "BRPOP" and reply:
            list_key, entry = reply
            return list_key, envelope_or_wrap(entry, list_key)
        return reply

    def rpop(self, name: str, count: int | None = None) -> Any:
        entry = super().rpop(name, count)  # type: ignore[misc]
        return envelope_or_wrap(entry, name) if isinstance(entry, bytes | str) else entry


@functools.cache
def _wrapping(client_cls: type) -> type:
    return type(f"Wrapping{client_cls.__name__}", (_WrappingRepliesMixin, client_cls), {})


class _WrappingClientMixin:
    """A channel whose clients wrap unparseable queue entries (see module doc), and which
    keeps its synchronous client instead of building one per command."""

    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu builds a new client object (over the channel's pool) for every synchronous
        # command: each publish's LPUSH paid for one, ~5 % of the Graph receiver's CPU
        # samples (py-spy under bench/receiver.py's load). A redis-py client is safe to share
        # between threads; it is kept only while the channel's pool is the same one (kombu
        # replaces the pool after a connection error).
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool  # type: ignore[attr-defined]
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()  # type: ignore[misc]
        return client

    def _get_client(self) -> Any:
        client = super()._get_client()  # type: ignore[misc]
        if isinstance(client, functools.partial):  # the global_keyprefix client
            return functools.partial(_wrapping(client.func), *client.args, **client.keywords)
        return _wrapping(client)


class Channel(_WrappingClientMixin, kombu_redis.Channel):
    """kombu's Redis channel whose clients wrap unparseable queue entries (see module doc)."""


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with ``Channel`` above."""

    Channel = Channel


class SentinelChannel(_WrappingClientMixin, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (the primary looked up through Sentinel on each new
    connection) whose clients wrap unparseable queue entries too."""


class SentinelTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport (``sentinel://``, option ``master_name``) with the channel
    above."""

    Channel = SentinelChannel
