"""The guard's script runs with the least client work: EVALSHA straight on a pooled connection.

redis-py's ``Script.__call__`` goes through ``execute_command``: retries, observability hooks
and argument filtering cost about as much client CPU as the round trip itself (py-spy and
cProfile of ``bench.guard``: a third of a guarded call's CPU). Here one connection is taken
from the client's pool, the command sent and the reply read, and the connection given back.
A Cluster client (its own routing) goes through ``run_script`` unchanged.

Errors: a connection error or timeout is SafeguardUnavailable, as in ``run_script``; a pooled
connection found dead (Redis restarted) is retried once on a fresh one, as redis-py does.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

from safeguards.errors import SafeguardUnavailable
from safeguards.redis_state import LuaScript, run_script


def evalsha(client: redis.Redis, lua: LuaScript, keys: list[str], args: list[Any]) -> Any:
    """Run ``lua`` in one round trip and return its reply (SafeguardUnavailable when down)."""
    if isinstance(client, RedisCluster):
        return run_script(client, lua, keys, args)
    script = lua.on(client)
    pool = client.connection_pool
    for attempt in (1, 2):
        try:
            # Any: redis-py's Connection methods are untyped in its stubs.
            conn: Any = pool.get_connection()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise SafeguardUnavailable(f"safeguard state unreachable: {exc}") from exc
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return conn.read_response()
        except NoScriptError:
            # First use on this server (or after SCRIPT FLUSH): load it, then run it as usual.
            pool.release(conn)
            conn = None
            return run_script(client, lua, keys, args)
        except redis.ResponseError:
            raise  # an error reply was read whole: the connection stays usable
        except redis.ConnectionError as exc:
            conn.disconnect()
            if attempt == 2:
                raise SafeguardUnavailable(f"safeguard state unreachable: {exc}") from exc
        except redis.TimeoutError as exc:
            conn.disconnect()
            raise SafeguardUnavailable(f"safeguard state unreachable: {exc}") from exc
        except BaseException:
            conn.disconnect()  # a reply half read must not be left on a pooled connection
            raise
        finally:
            if conn is not None:
                pool.release(conn)
    raise AssertionError("unreachable")  # pragma: no cover
