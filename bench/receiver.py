"""The Graph receiver against a bare FastAPI receiver that only calls ``.delay()`` (goal 7).

Both are served by uvicorn the same way (one process, ``--log-level warning``) and hit over
loopback. Ours is the real API (``api:create_app``) on a database of its own, its notifications
each for a fresh store (so none folds into a pending sync: every one pays the whole path —
subscription lookup, delivery log, job row, publish). A real Celery worker on each side records
when the task starts (bench/receiver_apps.py); the sender waits for that record (BLPOP).

- latency: one notification at a time, POST sent → task started, p50 (p99 in the notes);
- throughput: 8 concurrent senders (httpx.AsyncClient), a bounded count, requests/s.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from bench.harness import Benchmark, Pair
from models import Business, Provider, Store, SubscriptionStatus, WebhookSubscription
from providers.emulator.runner import free_port
from syncguard.migrate import upgrade
from syncguard.services import ensure_services
from syncguard.settings import get_settings

CLIENT_STATE = "bench-state"
CONCURRENCY = 8
#: Longest wait for a task to start before the round is called broken, seconds.
START_TIMEOUT_S = 30


@dataclass
class Stack:
    """The two receivers, their workers, a database of our own; ``take`` hands out fresh stores."""

    ours_url: str
    bare_url: str
    redis: redis.Redis
    starts_key: str
    stores: list[tuple[str, str]]  # (store id, Graph subscription id), each used once
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    drop: Callable[[], None] = lambda: None

    def take(self) -> tuple[str, str]:
        return self.stores.pop()

    def close(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
        self.drop()
        self.drop = lambda: None


def _spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _uvicorn(target: str, port: int, env: dict[str, str], factory: bool) -> subprocess.Popen[bytes]:
    argv = ["uvicorn", target, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    return _spawn(argv + (["--factory"] if factory else []), env)


def _worker(app: str, queue: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    argv = ["celery", "-A", f"bench.receiver_apps:{app}", "worker", "-P", "solo", "-Q", queue]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"]
    return _spawn(argv, env)


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"{url} did not start: {err[-2000:]}") from None
            time.sleep(0.1)


def _make_stores(db_url: str, count: int) -> list[tuple[str, str]]:
    engine = create_engine(db_url)
    state_hash = hashlib.sha256(CLIENT_STATE.encode()).hexdigest()
    with engine.begin() as conn:
        business = uuid.uuid4()
        conn.execute(insert(Business).values(id=business, name="Bench", slug=f"b-{business}"))
        stores = [(uuid.uuid4(), str(uuid.uuid4())) for _ in range(count)]
        conn.execute(
            insert(Store),
            [
                dict(id=s, business_id=business, provider=Provider.OUTLOOK,
                     mailbox_address=f"{s.hex[:12]}@bench.example")
                for s, _ in stores
            ],
        )  # fmt: skip
        conn.execute(
            insert(WebhookSubscription),
            [
                dict(business_id=business, store_id=s, provider=Provider.OUTLOOK,
                     provider_subscription_id=g, resource="/me/messages",
                     client_state_hash=state_hash, status=SubscriptionStatus.ACTIVE)
                for s, g in stores
            ],
        )  # fmt: skip
    engine.dispose()
    return [(str(s), g) for s, g in stores]


def start_stack(stores: int) -> Stack:
    """Migrate a fresh database, create ``stores`` stores, start both receivers and workers."""
    urls = ensure_services(get_settings())
    tag = uuid.uuid4().hex[:10]
    admin = create_engine(urls.database_url, isolation_level="AUTOCOMMIT")
    name = f"syncguard_bench_{tag}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db_url = make_url(urls.database_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    upgrade(db_url)
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": urls.redis_url,
        "BROKER_URL": urls.broker_url,
        "SYNCGUARD_REDIS_PREFIX": f"bench{tag}:",
        "BENCH_STARTS_KEY": f"bench{tag}:starts",
        "BENCH_BARE_QUEUE": f"bench{tag}_bare",
    }
    ours_port, bare_port = free_port(), free_port()
    stack = Stack(
        f"http://127.0.0.1:{ours_port}",
        f"http://127.0.0.1:{bare_port}",
        redis.Redis.from_url(urls.redis_url),
        env["BENCH_STARTS_KEY"],
        _make_stores(db_url, stores),
        drop=drop,
    )
    atexit.register(stack.close)
    try:
        api = _uvicorn("api:create_app", ours_port, env, factory=True)
        bare = _uvicorn("bench.receiver_apps:bare", bare_port, env, factory=False)
        stack.procs += [api, bare, _worker("ours_worker", "sync", env)]
        stack.procs.append(_worker("bare_worker", env["BENCH_BARE_QUEUE"], env))
        _wait_up(f"{stack.ours_url}/healthz", api)
        _wait_up(f"{stack.bare_url}/docs", bare)
    except BaseException:
        stack.close()
        raise
    return stack


def _ours_request(stack: Stack) -> tuple[str, str, dict[str, Any]]:
    store, graph_id = stack.take()
    item = {
        "subscriptionId": graph_id,
        "clientState": CLIENT_STATE,
        "changeType": "created",
        "resource": "Users/x/Messages/y",
        "tenantId": "t",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": uuid.uuid4().hex},
    }
    return store, f"{stack.ours_url}/webhooks/outlook", {"value": [item]}


def _bare_request(stack: Stack) -> tuple[str, str, dict[str, Any]]:
    key = uuid.uuid4().hex
    return key, f"{stack.bare_url}/notify", {"id": key}


Request = Callable[[Stack], tuple[str, str, dict[str, Any]]]


def latencies(stack: Stack, request: Request, count: int) -> list[float]:
    """Milliseconds from POST sent to task started, one notification at a time."""
    found: list[float] = []
    with httpx.Client(timeout=30) as client:
        for _ in range(count):
            key, url, body = request(stack)
            sent = time.time()
            client.post(url, json=body).raise_for_status()
            popped = stack.redis.blpop([f"{stack.starts_key}:{key}"], START_TIMEOUT_S)
            if popped is None:
                raise RuntimeError(f"task for {key} did not start within {START_TIMEOUT_S} s")
            found.append((float(popped[1]) - sent) * 1000)
    return found


def throughput(stack: Stack, request: Request, count: int) -> float:
    """Requests/s with ``CONCURRENCY`` senders posting ``count`` notifications in all."""
    jobs = [request(stack) for _ in range(count)]

    async def send() -> float:
        queue: asyncio.Queue[tuple[str, str, dict[str, Any]]] = asyncio.Queue()
        for job in jobs:
            queue.put_nowait(job)
        async with httpx.AsyncClient(timeout=30) as client:

            async def sender() -> None:
                while not queue.empty():
                    _key, url, body = queue.get_nowait()
                    (await client.post(url, json=body)).raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
            return count / (time.perf_counter() - started)

    rate = asyncio.run(send())
    for key, _url, _body in jobs:  # let both workers drain before the next round
        stack.redis.blpop([f"{stack.starts_key}:{key}"], START_TIMEOUT_S)
    return rate


def p(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``."""
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


_shared: dict[str, Stack] = {}


def _stack(quick: bool) -> Stack:
    if "stack" not in _shared:
        per_round = _sizes(quick)
        _shared["stack"] = start_stack(8 * (per_round[0] + per_round[1]) + 200)
    return _shared["stack"]


def _sizes(quick: bool) -> tuple[int, int]:
    """(latency samples, throughput requests) per round and side."""
    return (30, 120) if quick else (150, 600)


def _latency_setup(quick: bool) -> Pair:
    stack, (count, _) = _stack(quick), _sizes(quick)
    latencies(stack, _ours_request, 10)  # warm up both: connections, imports, prepared plans
    latencies(stack, _bare_request, 10)
    p99s: dict[str, list[float]] = {"ours": [], "bare": []}

    def measure(side: str, request: Request) -> float:
        found = latencies(stack, request, count)
        p99s[side].append(p(found, 0.99))
        pair.notes["p99 ms ours / bare"] = (
            f"{statistics.median(p99s['ours'] or [0]):.1f} / "
            f"{statistics.median(p99s['bare'] or [0]):.1f}"
        )
        return statistics.median(found)

    pair = Pair(
        ours=lambda: measure("ours", _ours_request), peer=lambda: measure("bare", _bare_request)
    )
    return pair


def _throughput_setup(quick: bool) -> Pair:
    stack, (_, count) = _stack(quick), _sizes(quick)

    def close() -> None:
        _shared.pop("stack", None)
        stack.close()

    return Pair(
        ours=lambda: throughput(stack, _ours_request, count),
        peer=lambda: throughput(stack, _bare_request, count),
        close=close,
    )


#: Goal 7 of issue 12: p50 within 1.3x of the bare receiver, throughput at least 0.7x of it.
BENCHMARKS = [
    Benchmark(
        name="Graph notification -> sync task starts, p50",
        unit="ms",
        peer_name="bare FastAPI .delay() receiver",
        goal=1.3,
        setup=_latency_setup,
        lower_is_better=True,
    ),
    Benchmark(
        name="receiver requests/s (8 concurrent)",
        unit="requests/s",
        peer_name="bare FastAPI .delay() receiver",
        goal=0.7,
        setup=_throughput_setup,
    ),
]
