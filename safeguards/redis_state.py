"""Shared hot state in Redis: the client, key naming, and Lua scripts loaded from .lua files."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from safeguards.errors import SafeguardUnavailable
from syncguard.settings import get_settings

#: Seconds a safeguard waits on Redis before treating it as unreachable.
SOCKET_TIMEOUT_S = 2.0


@cache
def get_redis(url: str | None = None) -> redis.Redis:
    """The process's client of the safeguards' Redis (a pool shared by threads)."""
    if url is None:
        from syncguard.services import ensure_services

        url = ensure_services(get_settings()).redis_url
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S
    )


def key(kind: str, scope: str, *parts: str) -> str:
    """A prefixed key whose hash tag ``{scope}`` keeps one scope's keys on one Cluster slot."""
    tail = ":".join(parts)
    base = f"{get_settings().redis_prefix}{kind}:{{{scope}}}"
    return f"{base}:{tail}" if tail else base


@cache
def _source(name: str) -> str:
    return resources.files("safeguards").joinpath("lua", f"{name}.lua").read_text()


def script(client: redis.Redis, name: str) -> Script:
    """The Lua script ``lua/<name>.lua`` registered on ``client`` (EVALSHA, loaded once)."""
    return client.register_script(_source(name))


def run_script(client: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    """Run a script in one round trip, wrapping driver errors into SafeguardUnavailable."""
    try:
        return script(client, name)(keys=keys, args=args)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise SafeguardUnavailable(f"safeguard state unreachable: {exc}") from exc
