"""The `/_emulator/` control API: mailboxes, messages, faults, stats, cursors and pushes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from providers.emulator.context import context
from providers.emulator.faults import Faults, MailboxStats
from providers.emulator.state import EmulatorError, Message, Provider

router = APIRouter(prefix="/_emulator")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewMailbox(_Strict):
    """Body of POST /_emulator/mailboxes."""

    provider: Provider
    address: str


class NewMessage(_Strict):
    """Body of POST /_emulator/mailboxes/{address}/messages."""

    id: str | None = None
    thread_id: str | None = None
    labels: list[str] = ["INBOX", "UNREAD"]
    subject: str = "(no subject)"
    sender: str = "sender@example.com"
    body: str = ""
    folder: str = "inbox"
    received_ms: int | None = None


class Relabel(_Strict):
    """Body of POST /_emulator/mailboxes/{address}/messages/{id}/labels."""

    add: list[str] = []
    remove: list[str] = []


class PushConfig(_Strict):
    """Body of PUT /_emulator/push: fields left out keep their value."""

    gmail_push_url: str | None = None
    gmail_push_audience: str | None = None
    service_account_email: str | None = None


class Lifecycle(_Strict):
    """Body of POST /_emulator/subscriptions/{id}/lifecycle."""

    event: Literal["reauthorizationRequired", "subscriptionRemoved", "missed"]


@router.post("/reset", status_code=204)
async def reset(request: Request) -> Response:
    """Forget every mailbox, token and subscription; push settings back to the config."""
    ctx = context(request)
    ctx.state.reset()
    ctx.push.gmail_push_url = ctx.config.gmail_push_url
    ctx.push.gmail_push_audience = ctx.config.gmail_push_audience
    ctx.push.service_account_email = ctx.config.service_account_email
    return Response(status_code=204)


@router.get("/push")
async def get_push(request: Request) -> dict[str, object]:
    """Current Gmail push settings."""
    return context(request).push.as_json()


@router.put("/push")
async def put_push(request: Request, body: PushConfig) -> dict[str, object]:
    """Set where Gmail pushes go and the audience/email of their OIDC token."""
    push = context(request).push
    for name in body.model_fields_set:
        setattr(push, name, getattr(body, name))
    return push.as_json()


@router.post("/mailboxes", status_code=201)
async def create_mailbox(request: Request, body: NewMailbox) -> dict[str, object]:
    """Create a mailbox; returns its OAuth client and refresh token."""
    box = context(request).state.create_mailbox(body.address, body.provider)
    return {
        "address": box.address,
        "provider": box.provider.value,
        "client_id": box.client_id,
        "client_secret": box.client_secret,
        "refresh_token": box.refresh_token,
    }


@router.get("/mailboxes/{address}")
async def get_mailbox(request: Request, address: str) -> dict[str, object]:
    """Every current message with its labels, plus cursors, watch and subscriptions."""
    ctx = context(request)
    with ctx.state.lock:
        box = ctx.state.mailbox(address)
        return {
            "address": box.address,
            "provider": box.provider.value,
            "revoked": box.revoked,
            "history_id": box.history_id,
            "history_floor": box.history_floor,
            "delta_epoch": box.delta_epoch,
            "watch": None
            if box.watch is None
            else {
                "label_ids": box.watch.label_ids,
                "behavior": box.watch.behavior,
                "expiration_ms": box.watch.expiration_ms,
            },
            "subscriptions": [s.as_json() for s in ctx.state.subscriptions_of(address)],
            "messages": sorted(
                (m.as_json() for m in box.messages.values()), key=lambda m: str(m["id"])
            ),
        }


@router.post("/mailboxes/{address}/messages", status_code=201)
async def add_message(request: Request, address: str, body: NewMessage) -> dict[str, object]:
    """Add a message; bumps historyId and the delta sequence, then notifies."""
    ctx = context(request)
    message = Message(
        id=body.id or "",
        thread_id=body.thread_id or "",
        labels=list(body.labels),
        subject=body.subject,
        sender=body.sender,
        body=body.body,
        folder=body.folder,
        received_ms=body.received_ms or int(time.time() * 1000),
        history_id=0,
        changed_seq=0,
    )
    ctx.notifier.on_change(ctx.state.add_message(address, message))
    return message.as_json()


@router.delete("/mailboxes/{address}/messages/{message_id}", status_code=204)
async def delete_message(request: Request, address: str, message_id: str) -> Response:
    """Delete a message; recorded in history and delta, then notified."""
    ctx = context(request)
    ctx.notifier.on_change(ctx.state.delete_message(address, message_id))
    return Response(status_code=204)


@router.post("/mailboxes/{address}/messages/{message_id}/labels")
async def relabel(
    request: Request, address: str, message_id: str, body: Relabel
) -> dict[str, object]:
    """Add/remove labels (Graph: categories; removing UNREAD marks it read)."""
    ctx = context(request)
    ctx.notifier.on_change(ctx.state.relabel(address, message_id, body.add, body.remove))
    with ctx.state.lock:
        return ctx.state.mailbox(address).messages[message_id].as_json()


@router.post("/mailboxes/{address}/expire-history")
async def expire_history(request: Request, address: str) -> dict[str, object]:
    """Forget retained Gmail history: older startHistoryIds answer 404."""
    return {"history_floor": str(context(request).state.expire_history(address))}


@router.post("/mailboxes/{address}/invalidate-delta")
async def invalidate_delta(request: Request, address: str) -> dict[str, object]:
    """Make every Graph delta/skip token issued so far stale."""
    return {"delta_epoch": context(request).state.invalidate_delta(address)}


@router.post("/mailboxes/{address}/revoke")
async def revoke(request: Request, address: str) -> dict[str, object]:
    """Revoke the grant: token refresh gives invalid_grant, API calls 401."""
    ctx = context(request)
    with ctx.state.lock:
        ctx.state.mailbox(address).revoked = True
    return {"revoked": True}


@router.post("/mailboxes/{address}/expire-tokens")
async def expire_tokens(request: Request, address: str) -> dict[str, object]:
    """Expire the mailbox's access tokens now (the grant stays valid)."""
    return {"expired": context(request).state.expire_tokens(address)}


@router.post("/mailboxes/{address}/expire-watch")
async def expire_watch(request: Request, address: str) -> dict[str, object]:
    """End the Gmail watch as if it had run out."""
    ctx = context(request)
    with ctx.state.lock:
        box = ctx.state.mailbox(address)
        if box.watch is not None:
            box.watch.expiration_ms = int(time.time() * 1000) - 1
    return {"expired": True}


@router.get("/mailboxes/{address}/faults")
async def get_faults(request: Request, address: str) -> dict[str, object]:
    """The mailbox's current fault switches (counts show what is left)."""
    ctx = context(request)
    with ctx.state.lock:
        return ctx.state.mailbox(address).faults.model_dump()


@router.put("/mailboxes/{address}/faults")
async def put_faults(request: Request, address: str, body: Faults) -> dict[str, object]:
    """Replace the mailbox's fault switches ({} clears them)."""
    ctx = context(request)
    with ctx.state.lock:
        ctx.state.mailbox(address).faults = body
        return body.model_dump()


@router.get("/mailboxes/{address}/stats")
async def get_stats(request: Request, address: str) -> dict[str, object]:
    """Requests and statuses per endpoint, dropped and delivered notifications."""
    ctx = context(request)
    with ctx.state.lock:
        return ctx.state.mailbox(address).stats.as_json()


@router.delete("/mailboxes/{address}/stats", status_code=204)
async def clear_stats(request: Request, address: str) -> Response:
    """Zero the mailbox's counters."""
    ctx = context(request)
    with ctx.state.lock:
        ctx.state.mailbox(address).stats = MailboxStats()
    return Response(status_code=204)


class Burst(_Strict):
    """Body of POST /_emulator/mailboxes/{address}/burst."""

    count: int = Field(ge=1, le=1000)


@router.post("/mailboxes/{address}/burst", status_code=202)
async def burst(request: Request, address: str, body: Burst) -> dict[str, object]:
    """Fire ``count`` notifications for the mailbox at once, as a provider's redelivery storm."""
    ctx = context(request)
    with ctx.state.lock:
        ctx.state.mailbox(address)  # 404 for an unknown mailbox
    return {"sent": ctx.notifier.burst(address, body.count)}


@router.post("/subscriptions/{subscription_id}/lifecycle", status_code=202)
async def lifecycle(request: Request, subscription_id: str, body: Lifecycle) -> dict[str, object]:
    """Send a lifecycle notification; subscriptionRemoved also deletes the subscription."""
    ctx = context(request)
    with ctx.state.lock:
        sub = ctx.state.subscriptions.get(subscription_id)
        if sub is None:
            raise EmulatorError(404, f"no subscription {subscription_id}")
        if body.event == "subscriptionRemoved":
            ctx.state.subscriptions.pop(subscription_id)
    ctx.notifier.lifecycle(sub, body.event)
    return {"sent": sub.lifecycle_url is not None, "event": body.event}


@router.post("/subscriptions/{subscription_id}/expire")
async def expire_subscription(request: Request, subscription_id: str) -> dict[str, object]:
    """Let a Graph subscription run out now (no more notifications; PATCH answers 404)."""
    ctx = context(request)
    with ctx.state.lock:
        sub = ctx.state.subscriptions.get(subscription_id)
        if sub is None:
            raise EmulatorError(404, f"no subscription {subscription_id}")
        sub.expiration = datetime.now(UTC)
    return {"expired": True}
