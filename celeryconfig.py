"""Every Celery setting, read from syncguard's settings and the services they resolve to."""

from __future__ import annotations

from typing import Any

from kombu.entity import Exchange, Queue

from beat_schedule import BEAT_SCHEDULE
from syncguard.services import current_services
from syncguard.settings import get_settings
from tasks.queues import MAINTENANCE, QUEUE_NAMES, SYNC, WEBHOOKS

_settings = get_settings()
_urls = current_services()

#: Slack on top of the longest countdown plus the longest run before a redelivery, seconds.
VISIBILITY_MARGIN_S = 300
# On Redis an unacknowledged message is handed to another worker after the visibility timeout.
# With acks_late a message stays unacknowledged while it waits in a worker for its countdown
# (up to max_backoff_s) and while it runs (up to task_time_limit_s): a shorter timeout would run
# a job twice. (RabbitMQ's consumer_timeout plays this role on amqp and must be as long.)
VISIBILITY_TIMEOUT_S = _settings.max_backoff_s + _settings.task_time_limit_s + VISIBILITY_MARGIN_S

broker_url = _urls.broker_url
_REDIS_SCHEMES = ("redis://", "rediss://", "sentinel://")
# Celery has no Redis Cluster backend: with the safeguards on a Cluster, results go to the
# broker when it is a Redis (standalone or Sentinel), else back over it (rpc://, RabbitMQ).
if not _settings.redis_cluster:
    result_backend = _urls.redis_url
elif broker_url.startswith(_REDIS_SCHEMES):
    result_backend = broker_url
else:
    result_backend = "rpc://"
broker_connection_retry_on_startup = True

_redis_transport: dict[str, Any] = {
    "visibility_timeout": VISIBILITY_TIMEOUT_S,
    # Keeps the broker's keys beside the safeguards' keys under one prefix on a shared Redis.
    "global_keyprefix": _settings.redis_prefix,
}


def _redis_options(url: str) -> dict[str, Any]:
    """Transport options of a Redis broker or backend at ``url``: a Sentinel one names its
    primary (``master_name``, kombu's and Celery's option); {} for anything else."""
    if not url.startswith(_REDIS_SCHEMES):
        return {}
    if url.startswith("sentinel://"):
        return {**_redis_transport, "master_name": _settings.redis_sentinel_master}
    return dict(_redis_transport)


broker_transport_options: dict[str, Any] = _redis_options(broker_url)
# A queue entry kombu cannot parse is wrapped and archived instead of killing the worker
# (see tasks/redis_transport.py); every other message is delivered exactly as by kombu.
if broker_url.startswith(("redis://", "rediss://")):
    broker_transport = "tasks.redis_transport:Transport"
elif broker_url.startswith("sentinel://"):
    broker_transport = "tasks.redis_transport:SentinelTransport"
# Poison messages (unknown task, undecodable body) are archived before they are dropped.
worker_consumer = "tasks.poison:ArchivingConsumer"
result_backend_transport_options: dict[str, Any] = _redis_options(result_backend)

# JSON only: pickle would let anyone who can write to the broker run code on the workers.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# At-least-once: a job is acknowledged only after it finished, and redelivered if its worker died.
task_acks_late = True
task_reject_on_worker_lost = True
# Costs throughput: a plain no-op ran ~1.8x faster at prefetch 4 (40 -> 71 tasks/s, prefork -c 2,
# 2026-11-30, noisy 2-core machine). Kept at 1: on Redis a prefetched message is unacknowledged
# while it waits behind the child's running task, and a sync job may run task_time_limit_s, so a
# multiplier above 1 could outlast VISIBILITY_TIMEOUT_S and run a job twice; it also parks short
# jobs behind long ones on one worker while another idles.
worker_prefetch_multiplier = 1
# A task whose ack cannot reach a lost broker connection will be redelivered: stop running it.
worker_cancel_long_running_tasks_on_connection_loss = True

task_queues = tuple(
    Queue(name, Exchange(name, type="direct"), routing_key=name)  # type: ignore[no-untyped-call]
    for name in QUEUE_NAMES
)
task_default_queue = SYNC
task_default_exchange = SYNC
task_default_routing_key = SYNC
task_routes = {
    **{f"tasks.{name}.*": {"queue": name} for name in QUEUE_NAMES},
    # Modules named after what they do, routed to the queue of their kind of work.
    "tasks.outbound.*": {"queue": WEBHOOKS},
    "tasks.alerting.*": {"queue": MAINTENANCE},
    "tasks.recovery.*": {"queue": MAINTENANCE},
}

task_soft_time_limit = _settings.task_soft_time_limit_s
task_time_limit = _settings.task_time_limit_s
result_expires = _settings.result_expires_s
# Measured on a plain no-op (prefork -c 2, Redis broker, 2026-11-30, medians of 3 noisy rounds;
# stock Celery 60 tasks/s in the same run): ours 40; events off 50; track_started off 48;
# result_extended off 59; all three off with prefetch 4: 79. Hence:
# - no extended results: nothing reads a result's name/args/worker (Flower takes them from
#   events, the job ledger from PostgreSQL), and the arguments then never sit in the backend;
# - no STARTED state: one backend write per task that nothing reads (Flower has task-started);
# - worker task events stay on (about a fifth of a no-op's throughput): Flower could switch them
#   on by its enable_events broadcast, but only every few seconds after it starts, and every task
#   a worker ran before that would be missing from Flower's history; operators watch it there;
# - task-sent events stay on: a publisher-side cost Flower cannot switch on remotely, and
#   Flower's task list starts from them (the arguments in them are redacted,
#   tasks/redaction_hooks.py). The two hottest publishers of sync messages leave them out per
#   message, since a sync's job row, committed before its message, already records it as
#   queued: the webhook receivers (tasks.sync.requests.publish(lean=True); the event was one
#   more Redis PUBLISH per notification and ~6 % of the Graph receiver's CPU, py-spy under
#   bench/receiver.py's load) and reconcile_chunk.
result_extended = False
task_track_started = False
worker_send_task_events = True
task_send_sent_event = True

timezone = "UTC"
enable_utc = True
beat_schedule = BEAT_SCHEDULE
# Two Beats started by mistake still run each entry once per period (a claim in Redis).
beat_scheduler = "tasks.beat:DedupingScheduler"
