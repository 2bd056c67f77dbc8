"""Outbound pushes on background threads: Gmail Pub/Sub (coalesced), Graph change and lifecycle."""

from __future__ import annotations

import base64
import heapq
import itertools
import json
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx

from providers.emulator.config import EmulatorConfig
from providers.emulator.faults import take_drop
from providers.emulator.push import PushSettings, PushSigner
from providers.emulator.state import Change, EmulatorState, Provider, Subscription, iso

log = logging.getLogger(__name__)

#: Pub/Sub subscription name put into every Gmail push body.
PUSH_SUBSCRIPTION = "projects/emulator/subscriptions/gmail-push"


class Notifier:
    """Schedules and sends notifications without blocking the request that caused them."""

    def __init__(
        self, config: EmulatorConfig, state: EmulatorState, push: PushSettings, signer: PushSigner
    ) -> None:
        self._config, self._state, self._push, self._signer = config, state, push, signer
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._gmail_pending: set[str] = set()
        self._gmail_last: dict[str, float] = {}
        self._rng = random.Random()
        self._stopped = False
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="emulator-push")
        self._client = httpx.Client(timeout=config.delivery_timeout_s)
        self._thread = threading.Thread(target=self._run, name="emulator-notifier", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the scheduler and the senders."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    def _schedule(self, due: float, job: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._queue, (due, next(self._counter), job))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._queue or self._queue[0][0] > time.time()):
                    wait = self._queue[0][0] - time.time() if self._queue else None
                    self._cond.wait(timeout=wait)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._queue)
            self._pool.submit(self._guarded, job)

    @staticmethod
    def _guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # a failed push must never kill the sender thread
            log.exception("emulator notification job failed")

    def on_change(self, change: Change) -> None:
        """Notify whoever listens to this mailbox about one change."""
        with self._state.lock:
            box = self._state.mailboxes.get(change.address)
            if box is None:
                return
            provider, watch = box.provider, box.watch
        if provider is Provider.GMAIL:
            if watch is not None and _passes_filter(change.labels, watch.label_ids, watch.behavior):
                self.gmail_push(change.address)
            return
        now = datetime.now(UTC)
        for sub in self._state.subscriptions_of(change.address):
            if sub.expiration > now and change.change_type in sub.change_types:
                body = _graph_change(sub, change, self._config.tenant_id)
                self._send(change.address, "graph_change", sub.notification_url, body, None)

    def gmail_push(self, address: str) -> None:
        """Schedule a Gmail push, at most one per interval per mailbox (later ones coalesce)."""
        with self._cond:
            if address in self._gmail_pending:
                return
            self._gmail_pending.add(address)
            last = self._gmail_last.get(address, 0.0)
        due = max(time.time(), last + self._config.gmail_push_min_interval_s)
        self._schedule(due, lambda: self._fire_gmail(address))

    def _fire_gmail(self, address: str) -> None:
        with self._cond:
            self._gmail_pending.discard(address)
            self._gmail_last[address] = time.time()
        url = self._push.gmail_push_url
        with self._state.lock:
            box = self._state.mailboxes.get(address)
            if box is None or box.watch is None or url is None:
                return
            if box.watch.expiration_ms < time.time() * 1000:
                return
            history_id = box.history_id
        data = json.dumps({"emailAddress": address, "historyId": history_id}).encode()
        message_id = str(secrets.randbelow(10**16))
        body = {
            "message": {
                "data": base64.urlsafe_b64encode(data).decode(),
                "messageId": message_id,
                "message_id": message_id,
                "publishTime": iso(datetime.now(UTC)),
                "attributes": {},
            },
            "subscription": PUSH_SUBSCRIPTION,
        }
        token = self._signer.sign_push_token(
            self._push.gmail_push_audience or url, self._push.service_account_email
        )
        self._deliver_with_faults(address, "gmail_push", url, body, f"Bearer {token}")

    def burst(self, address: str, count: int) -> int:
        """Send ``count`` notifications about the newest message at once (a redelivery storm)."""
        with self._state.lock:
            box = self._state.mailboxes.get(address)
            if box is None or not box.messages:
                return 0
            newest = max(box.messages.values(), key=lambda m: m.changed_seq)
            provider = box.provider
            change = Change(address, "updated", newest.id, tuple(newest.labels), box.history_id)
        now = time.time()
        for _ in range(count):
            if provider is Provider.GMAIL:
                self._schedule(now, lambda: self._fire_gmail(address))  # past the 1/s limit
            else:
                for sub in self._state.subscriptions_of(address):
                    body = _graph_change(sub, change, self._config.tenant_id)
                    self._send(address, "graph_change", sub.notification_url, body, None)
        return count

    def lifecycle(self, sub: Subscription, event: str) -> None:
        """Send one lifecycle notification to the subscription's lifecycle URL."""
        if sub.lifecycle_url is None:
            return
        body = {
            "value": [
                {
                    "subscriptionId": sub.id,
                    "subscriptionExpirationDateTime": iso(sub.expiration),
                    "tenantId": self._config.tenant_id,
                    "clientState": sub.client_state,
                    "lifecycleEvent": event,
                }
            ]
        }
        self._send(sub.address, "graph_lifecycle", sub.lifecycle_url, body, None)

    def _send(self, address: str, kind: str, url: str, body: object, auth: str | None) -> None:
        job = lambda: self._deliver_with_faults(address, kind, url, body, auth)  # noqa: E731
        self._schedule(time.time(), job)

    def _deliver_with_faults(
        self, address: str, kind: str, url: str, body: object, auth: str | None
    ) -> None:
        with self._state.lock:
            box = self._state.mailboxes.get(address)
            if box is None:
                return
            if take_drop(box.faults, self._rng):
                box.stats.notifications_dropped += 1
                return
            copies = 2 if box.faults.duplicate_notifications else 1
        for _ in range(copies):
            self._deliver(address, kind, url, body, auth)

    def _deliver(self, address: str, kind: str, url: str, body: object, auth: str | None) -> None:
        headers = {"Authorization": auth} if auth else {}
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            status = self._client.post(url, json=body, headers=headers).status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        attempt: dict[str, object] = {
            "kind": kind,
            "url": url,
            "status": status,
            "error": error,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
            "at": iso(datetime.now(UTC)),
        }
        with self._state.lock:
            box = self._state.mailboxes.get(address)
            if box is not None:
                box.stats.deliveries.append(attempt)


def _passes_filter(labels: tuple[str, ...], label_ids: list[str], behavior: str) -> bool:
    if not label_ids:
        return True
    touched = bool(set(labels) & set(label_ids))
    return touched if behavior.upper() != "EXCLUDE" else not touched


def _graph_change(sub: Subscription, change: Change, tenant_id: str) -> dict[str, object]:
    resource = f"Users/{change.address}/Messages/{change.message_id}"
    return {
        "value": [
            {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": iso(sub.expiration),
                "clientState": sub.client_state,
                "changeType": change.change_type,
                "resource": resource,
                "tenantId": tenant_id,
                "resourceData": {
                    "@odata.type": "#Microsoft.Graph.Message",
                    "@odata.id": resource,
                    "@odata.etag": f'W/"{change.history_id}"',
                    "id": change.message_id,
                },
            }
        ]
    }
