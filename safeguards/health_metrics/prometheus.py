"""Prometheus counters and histograms kept in Redis: every worker on every host adds to one total.

Each observation is one MULTI/EXEC pipeline of HINCRBY / HINCRBYFLOAT on hashes under the
configured key prefix (one hash tag, so it also runs on Redis Cluster). The hot counters (the
safeguards' decisions, two per guarded call; the task runs; the webhook deliveries) are
summed in process instead and ride along with the next observation's MULTI, or are flushed by
a background thread within ``FLUSH_INTERVAL_S`` / once ``FLUSH_EVENTS`` are pending (and by a
scrape of the process, and when a worker child exits): HINCRBY of a sum adds up to the same
total across processes and hosts. A scrape reads the hashes
back (``RedisCounterCollector``) and adds gauges read at scrape time from PostgreSQL and the broker.
Recording never fails the caller: when Redis is unreachable the observation is skipped, logged,
and counted into ``system_health_metrics`` as ``prometheus_observations_lost``.
"""

from __future__ import annotations

import atexit
import bisect
import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from models import MetricType
from safeguards.health_metrics.recorder import record_metric
from safeguards.redis_state import connect, key
from syncguard.settings import get_settings

log = logging.getLogger(__name__)

#: Upper bounds of the task duration buckets, seconds.
TASK_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Upper bounds of the inbound webhook latency buckets, seconds.
WEBHOOK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buffered counter increments flushed at the latest after this many seconds ...
FLUSH_INTERVAL_S = 1.0
#: ... or once this many are pending.
FLUSH_EVENTS = 500
#: Hash tag shared by every counter key: one observation's MULTI stays on one Cluster slot.
KEY_SCOPE = "prometheus"

Safeguard = Literal["rate_limit", "circuit_breaker"]
Decision = Literal["allowed", "refused", "unavailable"]
#: What an inbound webhook delivery ended in (see api/outcomes.py): acted on; acknowledged but
#: never processable; refused (unauthenticated); our own outage (503).
WebhookOutcome = Literal["processed", "ignored", "refused", "unavailable"]


@dataclass(frozen=True)
class Family:
    """A counter (no buckets) or histogram (buckets, seconds) whose samples live in one hash."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()

    def redis_key(self) -> str:
        """The hash that holds this family's samples."""
        return key("prom", KEY_SCOPE, self.name)


TASKS_TOTAL = Family("syncguard_tasks_total", "Task runs by outcome.", ("task", "outcome"))
TASK_DURATION = Family(
    "syncguard_task_duration_seconds", "Task run time.", ("task",), TASK_BUCKETS_S
)
SAFEGUARD_DECISIONS = Family(
    "syncguard_safeguard_decisions_total",
    "Admission decisions of the circuit breaker and rate limiter.",
    ("safeguard", "decision"),
)
WEBHOOK_DELIVERIES = Family(
    "syncguard_webhook_deliveries_total",
    "Inbound webhook deliveries by the HTTP status class answered and their outcome.",
    ("provider", "kind", "status_class", "outcome"),
)
WEBHOOK_IGNORED = Family(
    "syncguard_webhook_notifications_ignored_total",
    "Inbound notifications acknowledged without processing, by reason.",
    ("provider", "kind", "reason"),
)
WEBHOOK_DURATION = Family(
    "syncguard_webhook_delivery_duration_seconds",
    "Time to answer an inbound webhook delivery.",
    ("provider", "kind"),
    WEBHOOK_BUCKETS_S,
)
#: ``repair`` is "storable" (NUL, unpaired surrogate or over-long text replaced or fitted) or
#: "unreadable" (a value of a shape the adapter could not read, left empty).
VALUE_REPAIRS = Family(
    "syncguard_provider_values_repaired_total",
    "Provider-supplied values changed before they were stored, by field and kind of repair.",
    ("table", "field", "repair"),
)
ROWS_SET_ASIDE = Family(
    "syncguard_rows_set_aside_total",
    "Provider records the database refused, set aside (archived) while the rest committed.",
    ("table", "error"),
)
#: Every family a scrape reads from Redis.
FAMILIES = (
    TASKS_TOTAL,
    TASK_DURATION,
    SAFEGUARD_DECISIONS,
    WEBHOOK_DELIVERIES,
    WEBHOOK_IGNORED,
    WEBHOOK_DURATION,
    VALUE_REPAIRS,
    ROWS_SET_ASIDE,
)

Pipeline = Any  # redis.client.Pipeline, generic in redis' stubs


def _field(values: Iterable[str], suffix: str = "") -> str:
    """A hash field: the label values as JSON, then ``|suffix`` for a histogram's parts."""
    encoded = json.dumps(list(values), separators=(",", ":"))
    return f"{encoded}|{suffix}" if suffix else encoded


def _inc(pipe: Pipeline, family: Family, values: tuple[str, ...], amount: int = 1) -> None:
    pipe.hincrby(family.redis_key(), _field(values), amount)


class CounterStore:
    """Writes observations to Redis; backs off after a failure and counts what it lost."""

    def __init__(self, client: Callable[[], redis.Redis] | None = None) -> None:
        self._client = client or _default_client
        self._lock = threading.Lock()
        self._down_until = 0.0
        #: Observations skipped or failed and not yet reported to system_health_metrics.
        self.lost = 0
        #: Summed increments not yet sent: {(hash key, field): amount}, and this process's id.
        self._pending: dict[tuple[str, str], int] = defaultdict(int)
        #: Summed float increments not yet sent (histogram sums): {(hash key, field): amount}.
        self._pending_sums: dict[tuple[str, str], float] = defaultdict(float)
        self._pending_events = 0
        self._owner = os.getpid()
        self._flusher: threading.Thread | None = None

    def add(self, family: Family, values: tuple[str, ...], amount: int = 1) -> None:
        """Buffer one counter increment; sent with the next observation or flush."""
        self.add_fields(((family.redis_key(), _field(values)),), amount)

    def add_fields(
        self,
        fields: Iterable[tuple[str, str]],
        amount: int = 1,
        sums: Iterable[tuple[tuple[str, str], float]] = (),
    ) -> None:
        """Buffer an increment of each (hash key, field), and of each float in ``sums`` (a
        histogram's sum, seconds); the hot path's form (no encoding)."""
        with self._lock:
            self._adopt()
            for hash_field in fields:
                self._pending[hash_field] += amount
                self._pending_events += 1
            for hash_field, value in sums:
                self._pending_sums[hash_field] += value
                self._pending_events += 1
            full = self._pending_events >= FLUSH_EVENTS
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_forever, name="prometheus-flush", daemon=True
                )
                self._flusher.start()
        if full:
            self.flush()

    def flush(self) -> bool:
        """Send the buffered increments now (True when there were none to send)."""
        return self.send(lambda pipe: None) if self._pending_events else True

    def _adopt(self) -> None:
        # A forked child inherits the parent's buffer (the parent sends it) but not its thread.
        if self._owner != os.getpid():
            self._owner, self._flusher = os.getpid(), None
            self._pending, self._pending_events = defaultdict(int), 0
            self._pending_sums = defaultdict(float)

    def _drain(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], float]]:
        with self._lock:
            self._adopt()
            pending, self._pending, self._pending_events = self._pending, defaultdict(int), 0
            sums, self._pending_sums = self._pending_sums, defaultdict(float)
        return pending, sums

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_INTERVAL_S)
            self.flush()

    def send(self, build: Callable[[Pipeline], None]) -> bool:
        """Run ``build``'s commands and the buffered increments in one MULTI/EXEC.

        False (logged, counted) when it failed; the buffered increments are then lost too.
        """
        settings = get_settings()
        now = time.monotonic()
        if now < self._down_until:
            self._lose(None)
            return False
        try:
            pending, sums = self._drain()
            with self._client().pipeline(transaction=True) as pipe:
                for (hkey, field), amount in pending.items():
                    pipe.hincrby(hkey, field, amount)
                for (hkey, field), value in sums.items():
                    pipe.hincrbyfloat(hkey, field, value)
                build(pipe)
                pipe.execute()
        except redis.RedisError as exc:
            self._down_until = now + settings.prometheus_retry_after_s
            log.warning(
                "prometheus counters unreachable, skipping for %.1fs: %s",
                settings.prometheus_retry_after_s,
                exc,
            )
            self._lose(exc)
            return False
        except Exception as exc:  # a bug here must not fail the task or the request
            log.exception("prometheus observation failed")
            self._lose(exc)
            return False
        if self.lost:
            self._report()
        return True

    def _lose(self, exc: BaseException | None) -> None:
        with self._lock:
            self.lost += 1
        if exc is not None:
            self._report()

    def _report(self) -> None:
        with self._lock:
            lost, self.lost = self.lost, 0
        if lost:
            record_metric(
                MetricType.ERRORS, "prometheus_observations_lost", float(lost), unit="observations"
            )


@cache
def _default_client() -> redis.Redis:
    from syncguard.services import ensure_services

    settings = get_settings()
    timeout = settings.prometheus_redis_timeout_s
    url = ensure_services(settings).redis_url
    return connect(url, cluster=settings.redis_cluster, timeout_s=timeout)


#: The process's writer (its client is a pool shared by threads; fork-safe in redis-py).
COUNTERS = CounterStore()
atexit.register(COUNTERS.flush)


def count_task(task: str, outcome: str, duration_s: float) -> None:
    """Count one task run and observe its duration (seconds).

    Buffered like the safeguards' decisions (flushed within ``FLUSH_INTERVAL_S``, by a scrape
    of this process, and when a worker child exits): a MULTI of its own per task run was ~18 %
    of a guarded no-op task's worker CPU (py-spy under bench/tasks.py), as much as the guard.
    """
    at = get_settings().redis_prefix
    fields = [_cached_field(at, TASKS_TOTAL, (task, outcome))]
    _observe(at, TASK_DURATION, (task,), TASK_BUCKETS_S, duration_s, fields)


def _observe(
    at: str,
    histogram: Family,
    values: tuple[str, ...],
    buckets: tuple[float, ...],
    duration_s: float,
    fields: list[tuple[str, str]],
) -> None:
    """Buffer ``fields`` plus one histogram observation (its bucket, count and sum)."""
    slot = bisect.bisect_left(buckets, duration_s)
    if slot < len(buckets):  # past the last bound only +Inf (the count) holds it
        fields.append(_cached_field(at, histogram, values, f"b{slot}"))
    fields.append(_cached_field(at, histogram, values, "count"))
    total = _cached_field(at, histogram, values, "sum")
    COUNTERS.add_fields(fields, sums=((total, duration_s),))


@cache
def _cached_field(
    prefix: str, family: Family, values: tuple[str, ...], suffix: str = ""
) -> tuple[str, str]:
    # Encoded once per (prefix, label values, bucket): a few dozen per process; the prefix is
    # part of the cache key because the hash's key carries it.
    return family.redis_key(), _field(values, suffix)


def count_decision(safeguard: Safeguard, decision: Decision) -> None:
    """Count one admission decision of a safeguard (buffered: see the module docstring)."""
    COUNTERS.add_fields((_decision_field(get_settings().redis_prefix, safeguard, decision),))


def count_decisions(circuit: Decision, rate_limit: Decision | None) -> None:
    """Count a guarded call's decisions (the limiter's None when the circuit refused first)."""
    prefix = get_settings().redis_prefix
    fields = [_decision_field(prefix, "circuit_breaker", circuit)]
    if rate_limit is not None:
        fields.append(_decision_field(prefix, "rate_limit", rate_limit))
    COUNTERS.add_fields(fields)


@cache
def _decision_field(prefix: str, safeguard: str, decision: str) -> tuple[str, str]:
    # Encoded once per (prefix, label values): the guard counts two decisions per call.
    return SAFEGUARD_DECISIONS.redis_key(), _field((safeguard, decision))


def count_webhook(
    provider: str,
    kind: str,
    status: int,
    duration_s: float,
    outcome: WebhookOutcome = "processed",
    ignored: Iterable[str] = (),
) -> None:
    """Count a delivery (status class, outcome), its ignored notifications, its latency.

    Buffered like the safeguards' decisions (flushed within ``FLUSH_INTERVAL_S``, and by a
    scrape of this process): a MULTI of its own was one more Redis round trip per delivery,
    ~5 % of the Graph receiver's samples (py-spy under bench/receiver.py's load).
    """
    at = get_settings().redis_prefix
    status_class = f"{status // 100}xx"
    fields = [_cached_field(at, WEBHOOK_DELIVERIES, (provider, kind, status_class, outcome))]
    fields += [_cached_field(at, WEBHOOK_IGNORED, (provider, kind, str(r))) for r in ignored]
    _observe(at, WEBHOOK_DURATION, (provider, kind), WEBHOOK_BUCKETS_S, duration_s, fields)


def count_value_repairs(table: str, fields: Iterable[str], repair: str) -> None:
    """Count each field of one row whose provider value was repaired (``repair``: the kind)."""
    names = list(fields)

    def build(pipe: Pipeline) -> None:
        for name in names:
            _inc(pipe, VALUE_REPAIRS, (table, name, repair))

    if names:
        COUNTERS.send(build)


def count_set_aside(table: str, error: str) -> None:
    """Count one provider record set aside because the database refused it (``error``: class)."""
    COUNTERS.send(lambda pipe: _inc(pipe, ROWS_SET_ASIDE, (table, error)))


def read_family(family: Family, raw: dict[bytes, bytes]) -> Metric:
    """One family's samples from its hash as read by HGETALL."""
    if not family.buckets:
        counter = CounterMetricFamily(family.name, family.documentation, labels=family.labels)
        for field, value in sorted(raw.items()):
            counter.add_metric(json.loads(field), float(value))
        return counter
    parts: dict[str, dict[str, float]] = defaultdict(dict)
    for field, value in raw.items():
        labels, _, part = field.decode().rpartition("|")
        parts[labels][part] = float(value)
    histogram = HistogramMetricFamily(family.name, family.documentation, labels=family.labels)
    for labels, values in sorted(parts.items()):
        cumulative, buckets = 0.0, []
        for slot, bound in enumerate(family.buckets):
            cumulative += values.get(f"b{slot}", 0.0)
            buckets.append((repr(bound), cumulative))
        buckets.append(("+Inf", max(values.get("count", 0.0), cumulative)))
        histogram.add_metric(json.loads(labels), buckets, values.get("sum", 0.0))
    return histogram


#: Reads gauges at scrape time; raises on an unreachable source (the scrape reports it down).
GaugeSource = Callable[[], Iterable[Metric]]


class RedisCounterCollector(Collector):
    """The counters from Redis, then every gauge source; a failing source reports ``up`` 0."""

    def __init__(
        self,
        gauges: dict[str, GaugeSource],
        client: Callable[[], redis.Redis] | None = None,
    ) -> None:
        self._gauges = gauges
        self._client = client or _default_client

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: every family is read at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family now (this process's buffered increments sent first)."""
        COUNTERS.flush()
        up = GaugeMetricFamily(
            "syncguard_metrics_source_up",
            "1 when the scrape could read this source, else 0.",
            labels=["source"],
        )
        try:
            pipe = self._client().pipeline(transaction=False)
            for family in FAMILIES:
                pipe.hgetall(family.redis_key())
            hashes = pipe.execute()
        except redis.RedisError:
            log.warning("scrape: prometheus counters unreachable", exc_info=True)
            up.add_metric(["redis"], 0.0)
        else:
            up.add_metric(["redis"], 1.0)
            yield from (read_family(f, raw) for f, raw in zip(FAMILIES, hashes, strict=True))
        for source, read in self._gauges.items():
            try:
                metrics = list(read())
            except Exception:  # one broken source must not blank the whole scrape
                log.warning("scrape: gauge source %s failed", source, exc_info=True)
                up.add_metric([source], 0.0)
                continue
            up.add_metric([source], 1.0)
            yield from metrics
        yield up
