"""Shared hot state in Redis: the client, key naming, and Lua scripts loaded from .lua files."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from typing import Any
from weakref import WeakKeyDictionary

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


@dataclass(frozen=True)
class LuaScript:
    """A Lua script kept in ``<package>/<name>.lua``, beside the Python that runs it."""

    package: str
    name: str
    #: Scripts this one calls as Lua functions named after them, ``name(KEYS, ARGV)``: Redis
    #: cannot call one script from another, so a composite is their texts in one chunk (one
    #: round trip, one atomic step).
    includes: tuple[LuaScript, ...] = ()

    @cached_property
    def source(self) -> str:
        """The script's text (with its includes wrapped as local functions), read once."""
        own = resources.files(self.package).joinpath(f"{self.name}.lua").read_text()
        wrapped = [f"local function {s.name}(KEYS, ARGV)\n{s.source}\nend\n" for s in self.includes]
        return "".join(wrapped) + own

    def on(self, client: redis.Redis) -> Script:
        """This script registered on ``client`` once (EVALSHA, loaded on first use)."""
        scripts = _registered.setdefault(client, {})
        found = scripts.get(self)
        if found is None:
            found = scripts[self] = client.register_script(self.source)
        return found


#: Each client's registered scripts: registering hashes the source, so it happens once per client.
_registered: WeakKeyDictionary[redis.Redis, dict[LuaScript, Script]] = WeakKeyDictionary()


def run_script(client: redis.Redis, lua: LuaScript, keys: list[str], args: list[Any]) -> Any:
    """Run a script in one round trip, wrapping driver errors into SafeguardUnavailable."""
    try:
        return lua.on(client)(keys=keys, args=args)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise SafeguardUnavailable(f"safeguard state unreachable: {exc}") from exc
