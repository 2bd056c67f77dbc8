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
result_backend = _urls.redis_url
broker_connection_retry_on_startup = True

_redis_transport: dict[str, Any] = {
    "visibility_timeout": VISIBILITY_TIMEOUT_S,
    # Keeps the broker's keys beside the safeguards' keys under one prefix on a shared Redis.
    "global_keyprefix": _settings.redis_prefix,
}
broker_transport_options: dict[str, Any] = (
    dict(_redis_transport) if broker_url.startswith(("redis", "sentinel")) else {}
)
# A queue entry kombu cannot parse is wrapped and archived instead of killing the worker
# (see tasks/redis_transport.py); every other message is delivered exactly as by kombu.
if broker_url.startswith(("redis://", "rediss://")):
    broker_transport = "tasks.redis_transport:Transport"
# Poison messages (unknown task, undecodable body) are archived before they are dropped.
worker_consumer = "tasks.poison:ArchivingConsumer"
result_backend_transport_options: dict[str, Any] = dict(_redis_transport)

# JSON only: pickle would let anyone who can write to the broker run code on the workers.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]

# At-least-once: a job is acknowledged only after it finished, and redelivered if its worker died.
task_acks_late = True
task_reject_on_worker_lost = True
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
# Flower shows a task's name and arguments from its result and events.
result_extended = True
task_track_started = True
worker_send_task_events = True
task_send_sent_event = True

timezone = "UTC"
enable_utc = True
beat_schedule = BEAT_SCHEDULE
# Two Beats started by mistake still run each entry once per period (a claim in Redis).
beat_scheduler = "tasks.beat:DedupingScheduler"
