"""Shared hot state in Redis: the client, key naming, and Lua scripts loaded from .lua files.

One Redis, a Sentinel-managed primary or a Redis Cluster (``connect``). Every key carries the
hash tag of its scope (``key``), and every script and transaction touches one scope's keys
only, so each runs on one Cluster slot; batches of scripts over many scopes go through
``run_script_batch`` (one pipeline per Cluster node: redis-py's cluster pipeline refuses
EVALSHA).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from typing import Any, cast
from urllib.parse import unquote, urlsplit
from weakref import WeakKeyDictionary

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.sentinel import Sentinel

from safeguards.errors import SafeguardUnavailable
from syncguard.settings import get_settings

#: Seconds a safeguard waits on Redis before treating it as unreachable.
SOCKET_TIMEOUT_S = 2.0


@cache
def get_redis(url: str | None = None) -> redis.Redis:
    """The process's client of the safeguards' Redis (a pool shared by threads), as ``connect``
    makes it: a cluster client when ``SYNCGUARD_REDIS_CLUSTER`` is set."""
    if url is None:
        from syncguard.services import ensure_services

        url = ensure_services(get_settings()).redis_url
    return connect(url, cluster=get_settings().redis_cluster)


def connect(url: str, *, cluster: bool = False, timeout_s: float = SOCKET_TIMEOUT_S) -> redis.Redis:
    """A client of the Redis deployment ``url`` names; every socket waits at most ``timeout_s``.

    - ``sentinel://[[user]:password@]host:port[/db]`` (several ``;``-separated, as Celery
      spells a Sentinel broker): the primary named ``SYNCGUARD_REDIS_SENTINEL_MASTER``, looked
      up through those Sentinels on every new connection, so after a failover the client
      reconnects to the promoted replica (redis-py's ``Sentinel.master_for``).
    - ``cluster``: a ``RedisCluster`` seeded by the URL's nodes (``;``-separated); it learns the
      slot map from them and follows MOVED redirects. Typed as ``redis.Redis``: it offers the
      same commands for keys of one slot (what every caller here sends, see the module doc);
      ``tests/reliability/test_redis_cluster.py`` runs the safeguards on a real Cluster.
    - otherwise ``redis.Redis.from_url``.

    Raises ValueError for a Sentinel URL without a master name.
    """
    timeouts: dict[str, Any] = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    urls = [u.strip() for u in url.split(";") if u.strip()]
    if urls[0].startswith("sentinel://"):
        return _sentinel_primary(urls, timeouts)
    if cluster:
        seeds = [
            ClusterNode(p.hostname, p.port or 6379)  # type: ignore[no-untyped-call]
            for p in map(urlsplit, urls[1:])
        ]
        # Not a subclass of redis.Redis, but the same command API (see the docstring).
        return cast(redis.Redis, RedisCluster.from_url(urls[0], startup_nodes=seeds, **timeouts))
    return redis.Redis.from_url(urls[0], **timeouts)


def primaries(client: redis.Redis) -> list[tuple[str, redis.Redis]]:
    """``(name, client)`` of each primary holding part of the keyspace: every Cluster primary
    (``host:port``), else the client itself (name ""). For what must visit every key (SCAN),
    which on a Cluster walks one node: scan each, keeping one cursor per name."""
    if not isinstance(client, RedisCluster):
        return [("", client)]
    return [(n.name, client.get_redis_connection(n)) for n in client.get_primaries()]


def _sentinel_primary(urls: list[str], timeouts: dict[str, Any]) -> redis.Redis:
    master = get_settings().redis_sentinel_master
    if not master:
        raise ValueError("a sentinel:// Redis URL needs SYNCGUARD_REDIS_SENTINEL_MASTER")
    parts = [urlsplit(u) for u in urls]
    sentinels = [(p.hostname or "127.0.0.1", p.port or 26379) for p in parts]
    # Credentials and database are the primary's, read off the first URL that has them
    # (Celery reads a Sentinel broker URL the same way); the Sentinels are asked without auth.
    auth = next((p for p in parts if p.password or p.username), parts[0])
    path = parts[0].path.strip("/")
    kwargs: dict[str, Any] = {**timeouts, "db": int(path) if path else 0}
    if auth.username:
        kwargs["username"] = unquote(auth.username)
    if auth.password:
        kwargs["password"] = unquote(auth.password)
    sentinel = Sentinel(sentinels, sentinel_kwargs=dict(timeouts), **kwargs)  # type: ignore[no-untyped-call]
    return cast(redis.Redis, sentinel.master_for(master))  # type: ignore[no-untyped-call]


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


#: One script run of a batch: its KEYS (one scope's, so one Cluster slot) and its ARGV.
ScriptCall = tuple[Sequence[str], Sequence[Any]]


def run_script_batch(client: redis.Redis, lua: LuaScript, calls: Sequence[ScriptCall]) -> list[Any]:
    """Each call's reply, in order: one pipelined round trip (per Cluster node), not atomic
    across calls. Raises SafeguardUnavailable when Redis is unreachable."""
    script = lua.on(client)
    try:
        if not isinstance(client, RedisCluster):
            return _pipelined(client, script, calls, range(len(calls)))
        by_node: dict[str, list[int]] = {}
        for i, (keys, _) in enumerate(calls):
            by_node.setdefault(client.get_node_from_key(keys[0]).name, []).append(i)
        replies: list[Any] = [None] * len(calls)
        for name, indexes in by_node.items():
            node = client.get_redis_connection(client.get_node(node_name=name))
            try:
                found = _pipelined(node, script, calls, indexes)
            except redis.exceptions.MovedError:  # slots moving: the cluster client follows
                found = [script(keys=calls[i][0], args=calls[i][1]) for i in indexes]
            for i, reply in zip(indexes, found, strict=True):
                replies[i] = reply
        return replies
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise SafeguardUnavailable(f"safeguard state unreachable: {exc}") from exc


def _pipelined(
    node: redis.Redis, script: Script, calls: Sequence[ScriptCall], indexes: Sequence[int]
) -> list[Any]:
    pipe = node.pipeline(transaction=False)
    for i in indexes:
        keys, args = calls[i]
        script(keys=keys, args=args, client=pipe)  # the pipeline loads it where it is missing
    return list(pipe.execute())
