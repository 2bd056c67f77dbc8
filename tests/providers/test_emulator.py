"""The provider emulator over real HTTP: OAuth, Gmail, Graph, faults and push notifications."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse

from providers.emulator import EmulatorConfig, EmulatorHandle, running_emulator
from providers.emulator.runner import start_background
from tests.sync_support import eventually

GMAIL = "/gmail/v1/users/me"
CONFIG = EmulatorConfig(gmail_push_min_interval_s=0.5)


# --- a tiny notification receiver on its own thread -------------------------------------------


@dataclass
class Receiver:
    """Records every POST it gets; answers validation handshakes unless the path starts 'bad'."""

    url: str = ""
    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{path:path}")
        async def receive(request: Request, path: str) -> Response:
            token = request.query_params.get("validationToken")
            if token is not None:
                if path.startswith("bad"):
                    return PlainTextResponse("not the token", status_code=200)
                return PlainTextResponse(token)
            body = await request.body()
            with self.lock:
                self.calls.append(
                    {
                        "path": path,
                        "query": dict(request.query_params),
                        "headers": dict(request.headers),
                        "json": json.loads(body) if body else None,
                    }
                )
            return Response(status_code=202)

        return app

    def received(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.calls if c["path"] == path]

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    url, server, thread = start_background(rec.app())
    rec.url = url
    yield rec
    server.should_exit = True
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(CONFIG) as handle:
        yield handle


@pytest.fixture
def client(emulator: EmulatorHandle, receiver: Receiver) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, timeout=5) as c:
        assert c.post("/_emulator/reset").status_code == 204
        receiver.clear()
        yield c


def mailbox(client: httpx.Client, provider: str, address: str) -> dict[str, str]:
    """Create a mailbox and return its credentials plus an auth header."""
    creds = client.post("/_emulator/mailboxes", json={"provider": provider, "address": address})
    assert creds.status_code == 201
    data: dict[str, str] = creds.json()
    data["auth"] = f"Bearer {refresh(client, data).json()['access_token']}"
    return data


def refresh(client: httpx.Client, creds: dict[str, str]) -> httpx.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": creds["refresh_token"],
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
    }
    return client.post("/oauth2/token", data=form)


def add(client: httpx.Client, address: str, **fields: Any) -> dict[str, Any]:
    answer = client.post(f"/_emulator/mailboxes/{address}/messages", json=fields)
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def faults(client: httpx.Client, address: str, **switches: Any) -> None:
    answer = client.put(f"/_emulator/mailboxes/{address}/faults", json=switches)
    assert answer.status_code == 200, answer.text


# --- OAuth ------------------------------------------------------------------------------------


def test_token_refresh_401_and_revocation(client: httpx.Client) -> None:
    box = mailbox(client, "gmail", "owner@shop.test")
    token = refresh(client, box)
    assert token.status_code == 200
    assert token.json()["token_type"] == "Bearer" and token.json()["expires_in"] > 0

    missing = client.get(f"{GMAIL}/profile")
    assert missing.status_code == 401
    assert missing.json()["error"]["status"] == "UNAUTHENTICATED"
    assert (
        client.get(f"{GMAIL}/profile", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    profile = client.get(f"{GMAIL}/profile", headers={"Authorization": box["auth"]})
    assert profile.json()["emailAddress"] == "owner@shop.test"

    wrong_secret = refresh(client, {**box, "client_secret": "x"})
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"

    graph = client.get(
        "/v1.0/me/mailFolders/inbox/messages/delta", headers={"Authorization": box["auth"]}
    )
    assert graph.status_code == 401  # a Gmail grant is no Graph token

    client.post("/_emulator/mailboxes/owner@shop.test/revoke")
    revoked = refresh(client, box)
    assert revoked.status_code == 400 and revoked.json()["error"] == "invalid_grant"
    assert client.get(f"{GMAIL}/profile", headers={"Authorization": box["auth"]}).status_code == 401


def test_access_token_expires_and_refresh_recovers() -> None:
    with (
        running_emulator(EmulatorConfig(access_token_lifetime_s=0.4)) as emu,
        httpx.Client(base_url=emu.url) as client,
    ):
        box = mailbox(client, "outlook", "o@shop.test")
        path = "/v1.0/me/mailFolders/inbox/messages/delta"
        assert client.get(path, headers={"Authorization": box["auth"]}).status_code == 200
        time.sleep(0.5)
        expired = client.get(path, headers={"Authorization": box["auth"]})
        assert expired.status_code == 401
        assert expired.json()["error"]["code"] == "InvalidAuthenticationToken"
        fresh = f"Bearer {refresh(client, box).json()['access_token']}"
        assert client.get(path, headers={"Authorization": fresh}).status_code == 200


# --- Gmail ------------------------------------------------------------------------------------


def test_gmail_list_pagination_and_get(client: httpx.Client) -> None:
    box = mailbox(client, "gmail", "g@shop.test")
    auth = {"Authorization": box["auth"]}
    for i in range(7):
        add(
            client,
            "g@shop.test",
            subject=f"order {i}",
            sender="buyer@example.com",
            labels=["INBOX"] if i % 2 else ["INBOX", "UNREAD"],
            body=f"hello {i}",
        )

    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"maxResults": 3, **({"pageToken": token} if token else {})}
        page = client.get(f"{GMAIL}/messages", headers=auth, params=params).json()
        pages += 1
        assert page["resultSizeEstimate"] == 7
        seen += [m["id"] for m in page["messages"]]
        token = page.get("nextPageToken")
        if token is None:
            break
    state = client.get("/_emulator/mailboxes/g@shop.test").json()
    assert pages == 3 and sorted(seen) == sorted(m["id"] for m in state["messages"])

    unread = client.get(f"{GMAIL}/messages", headers=auth, params={"labelIds": "UNREAD"}).json()
    assert len(unread["messages"]) == 4
    spam = add(client, "g@shop.test", labels=["SPAM"])["id"]
    listed = client.get(f"{GMAIL}/messages", headers=auth).json()["messages"]
    assert spam not in [m["id"] for m in listed]
    with_spam = client.get(f"{GMAIL}/messages", headers=auth, params={"includeSpamTrash": "true"})
    assert spam in [m["id"] for m in with_spam.json()["messages"]]

    message_id = seen[0]
    meta = client.get(
        f"{GMAIL}/messages/{message_id}", headers=auth, params={"format": "metadata"}
    ).json()
    headers = {h["name"]: h["value"] for h in meta["payload"]["headers"]}
    assert headers["From"] == "buyer@example.com" and headers["Subject"].startswith("order ")
    assert {
        "id",
        "threadId",
        "labelIds",
        "snippet",
        "historyId",
        "internalDate",
        "sizeEstimate",
    } <= meta.keys()
    minimal = client.get(
        f"{GMAIL}/messages/{message_id}", headers=auth, params={"format": "minimal"}
    ).json()
    assert "payload" not in minimal
    missing = client.get(f"{GMAIL}/messages/nope", headers=auth)
    assert missing.status_code == 404
    assert missing.json()["error"]["errors"][0]["reason"] == "notFound"


def test_gmail_history_after_changes_and_stale_404(client: httpx.Client) -> None:
    box = mailbox(client, "gmail", "h@shop.test")
    auth = {"Authorization": box["auth"]}
    start = client.get(f"{GMAIL}/profile", headers=auth).json()["historyId"]
    first = add(client, "h@shop.test")
    second = add(client, "h@shop.test")
    client.post(
        f"/_emulator/mailboxes/h@shop.test/messages/{first['id']}/labels",
        json={"add": ["Label_1"], "remove": ["UNREAD"]},
    )
    client.delete(f"/_emulator/mailboxes/h@shop.test/messages/{second['id']}")

    history = client.get(f"{GMAIL}/history", headers=auth, params={"startHistoryId": start}).json()
    records = history["history"]
    assert [int(r["id"]) for r in records] == sorted(int(r["id"]) for r in records)
    assert len(records) == 4
    assert records[0]["messagesAdded"][0]["message"]["id"] == first["id"]
    assert records[2]["labelsAdded"][0]["labelIds"] == ["Label_1"]
    assert records[2]["labelsRemoved"][0]["labelIds"] == ["UNREAD"]
    assert records[3]["messagesDeleted"][0]["message"]["id"] == second["id"]
    assert history["historyId"] == client.get(f"{GMAIL}/profile", headers=auth).json()["historyId"]

    paged = client.get(
        f"{GMAIL}/history", headers=auth, params={"startHistoryId": start, "maxResults": 3}
    ).json()
    assert len(paged["history"]) == 3 and "nextPageToken" in paged
    rest = client.get(
        f"{GMAIL}/history",
        headers=auth,
        params={"startHistoryId": start, "maxResults": 3, "pageToken": paged["nextPageToken"]},
    ).json()
    assert len(rest["history"]) == 1 and "nextPageToken" not in rest
    only_deleted = client.get(
        f"{GMAIL}/history",
        headers=auth,
        params={"startHistoryId": start, "historyTypes": "messageDeleted"},
    ).json()
    assert len(only_deleted["history"]) == 1

    client.post("/_emulator/mailboxes/h@shop.test/expire-history")
    stale = client.get(f"{GMAIL}/history", headers=auth, params={"startHistoryId": start})
    assert stale.status_code == 404 and stale.json()["error"]["status"] == "NOT_FOUND"


# --- Graph ------------------------------------------------------------------------------------


def delta_round(client: httpx.Client, url: str, auth: str, size: int) -> tuple[list[Any], str, int]:
    """Follow nextLinks to the deltaLink; returns (items, deltaLink, pages)."""
    items: list[Any] = []
    pages = 0
    headers = {"Authorization": auth, "Prefer": f"odata.maxpagesize={size}"}
    while True:
        page = client.get(url, headers=headers)
        assert page.status_code == 200, page.text
        pages += 1
        items += page.json()["value"]
        if "@odata.deltaLink" in page.json():
            return items, page.json()["@odata.deltaLink"], pages
        url = page.json()["@odata.nextLink"]


def test_graph_delta_paging_incremental_and_stale(client: httpx.Client) -> None:
    box = mailbox(client, "outlook", "o@shop.test")
    ids = [
        add(client, "o@shop.test", subject=f"m{i}", labels=["UNREAD", "Blue"])["id"]
        for i in range(5)
    ]
    items, delta_link, pages = delta_round(
        client, "/v1.0/users/o@shop.test/mailFolders/inbox/messages/delta", box["auth"], 2
    )
    assert pages == 3 and sorted(m["id"] for m in items) == sorted(ids)
    assert items[0]["categories"] == ["Blue"] and items[0]["isRead"] is False
    assert {"subject", "from", "receivedDateTime", "parentFolderId", "changeKey"} <= items[0].keys()

    client.delete(f"/_emulator/mailboxes/o@shop.test/messages/{ids[0]}")
    client.post(
        f"/_emulator/mailboxes/o@shop.test/messages/{ids[1]}/labels", json={"remove": ["UNREAD"]}
    )
    new = add(client, "o@shop.test")["id"]
    changes, delta_link, _ = delta_round(client, delta_link, box["auth"], 10)
    by_id = {c["id"]: c for c in changes}
    assert by_id.keys() == {ids[0], ids[1], new}
    assert by_id[ids[0]]["@removed"] == {"reason": "deleted"}
    assert by_id[ids[1]]["isRead"] is True
    nothing, delta_link, _ = delta_round(client, delta_link, box["auth"], 10)
    assert nothing == []

    client.post("/_emulator/mailboxes/o@shop.test/invalidate-delta")
    stale = client.get(delta_link, headers={"Authorization": box["auth"]})
    assert stale.status_code == 410 and stale.json()["error"]["code"] == "syncStateNotFound"


def test_graph_stale_delta_can_answer_400() -> None:
    with (
        running_emulator(EmulatorConfig(stale_delta_status=400)) as emu,
        httpx.Client(base_url=emu.url) as client,
    ):
        box = mailbox(client, "outlook", "s@shop.test")
        _, link, _ = delta_round(
            client, "/v1.0/me/mailFolders/inbox/messages/delta", box["auth"], 5
        )
        faults(client, "s@shop.test", stale_cursor={"count": 1})
        stale = client.get(link, headers={"Authorization": box["auth"]})
        assert stale.status_code == 400 and stale.json()["error"]["code"] == "syncStateNotFound"
        assert client.get(link, headers={"Authorization": box["auth"]}).status_code == 200


def subscribe(
    client: httpx.Client, auth: str, url: str, minutes: float, **extra: Any
) -> httpx.Response:
    expiry = (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": url,
        "resource": "/users/me/mailFolders('inbox')/messages",
        "expirationDateTime": expiry,
        "clientState": "secret-state",
        **extra,
    }
    return client.post("/v1.0/subscriptions", json=body, headers={"Authorization": auth})


def test_graph_subscription_handshake_notifications_and_lifecycle(
    client: httpx.Client, receiver: Receiver
) -> None:
    box = mailbox(client, "outlook", "sub@shop.test")
    auth = {"Authorization": box["auth"]}
    created = subscribe(
        client,
        box["auth"],
        f"{receiver.url}/graph?store=7",
        60 * 24 * 30,
        lifecycleNotificationUrl=f"{receiver.url}/lifecycle",
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    expiry = datetime.fromisoformat(sub["expirationDateTime"].replace("Z", "+00:00"))
    assert expiry <= datetime.now(UTC) + timedelta(minutes=10_080)
    validations = client.get("/_emulator/mailboxes/sub@shop.test/stats").json()["deliveries"]
    assert [d["ok"] for d in validations if d["kind"] == "graph_validation"] == [True, True]

    short = subscribe(client, box["auth"], f"{receiver.url}/graph", 5).json()
    short_expiry = datetime.fromisoformat(short["expirationDateTime"].replace("Z", "+00:00"))
    assert short_expiry >= datetime.now(UTC) + timedelta(minutes=44)
    client.delete(f"/v1.0/subscriptions/{short['id']}", headers=auth)

    message = add(client, "sub@shop.test")
    eventually(lambda: len(receiver.received("graph")) == 1)
    note = receiver.received("graph")[0]
    assert note["query"] == {"store": "7"}
    value = note["json"]["value"][0]
    assert value["subscriptionId"] == sub["id"] and value["clientState"] == "secret-state"
    assert value["changeType"] == "created" and value["resourceData"]["id"] == message["id"]
    assert value["resourceData"]["@odata.type"] == "#Microsoft.Graph.Message"

    later = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    renewed = client.patch(
        f"/v1.0/subscriptions/{sub['id']}", headers=auth, json={"expirationDateTime": later}
    )
    assert renewed.status_code == 200
    assert (
        client.post(f"/v1.0/subscriptions/{sub['id']}/reauthorize", headers=auth).status_code == 200
    )
    event = client.post(
        f"/_emulator/subscriptions/{sub['id']}/lifecycle", json={"event": "reauthorizationRequired"}
    )
    assert event.status_code == 202
    eventually(lambda: len(receiver.received("lifecycle")) == 1)
    life = receiver.received("lifecycle")[0]["json"]["value"][0]
    assert life["lifecycleEvent"] == "reauthorizationRequired"
    assert life["subscriptionId"] == sub["id"]

    assert client.delete(f"/v1.0/subscriptions/{sub['id']}", headers=auth).status_code == 204
    gone = client.patch(
        f"/v1.0/subscriptions/{sub['id']}", headers=auth, json={"expirationDateTime": later}
    )
    assert gone.status_code == 404


def test_graph_subscription_failing_handshake_is_400(
    client: httpx.Client, receiver: Receiver
) -> None:
    box = mailbox(client, "outlook", "bad@shop.test")
    wrong_echo = subscribe(client, box["auth"], f"{receiver.url}/bad", 60)
    assert wrong_echo.status_code == 400
    assert wrong_echo.json()["error"]["code"] == "ValidationError"
    bad_lifecycle = subscribe(
        client,
        box["auth"],
        f"{receiver.url}/ok",
        60,
        lifecycleNotificationUrl=f"{receiver.url}/bad-life",
    )
    assert bad_lifecycle.status_code == 400
    unreachable = subscribe(client, box["auth"], "http://127.0.0.1:9/nothing", 60)
    assert unreachable.status_code == 400
    assert client.get("/_emulator/mailboxes/bad@shop.test").json()["subscriptions"] == []


# --- faults -----------------------------------------------------------------------------------


def test_throttle_429_gmail_and_graph(client: httpx.Client) -> None:
    gmail = mailbox(client, "gmail", "t@shop.test")
    faults(client, "t@shop.test", throttle_429={"count": 2, "retry_after": 1.5})
    auth = {"Authorization": gmail["auth"]}
    for _ in range(2):
        throttled = client.get(f"{GMAIL}/messages", headers=auth)
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1.5"
        error = throttled.json()["error"]
        assert error["status"] == "RESOURCE_EXHAUSTED"
        assert error["message"] == "Too many concurrent requests for user"
    assert client.get(f"{GMAIL}/messages", headers=auth).status_code == 200
    stats = client.get("/_emulator/mailboxes/t@shop.test/stats").json()
    assert stats["requests"]["gmail.messages.list"] == 3
    assert stats["responses"]["gmail.messages.list"] == {"429": 2, "200": 1}

    outlook = mailbox(client, "outlook", "t2@shop.test")
    faults(client, "t2@shop.test", throttle_429={"count": 1, "retry_after": 3})
    answer = client.get(
        "/v1.0/me/mailFolders/inbox/messages/delta", headers={"Authorization": outlook["auth"]}
    )
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "3"
    assert answer.json()["error"]["code"] == "TooManyRequests"


@pytest.mark.parametrize(
    "reason",
    ["userRateLimitExceeded", "rateLimitExceeded", "dailyLimitExceeded", "insufficientPermissions"],
)
def test_quota_403_reasons(client: httpx.Client, reason: str) -> None:
    box = mailbox(client, "gmail", "q@shop.test")
    faults(client, "q@shop.test", quota_403={"reason": reason, "count": 1})
    denied = client.get(f"{GMAIL}/messages", headers={"Authorization": box["auth"]})
    assert denied.status_code == 403
    assert denied.json()["error"]["errors"][0]["reason"] == reason
    assert denied.json()["error"]["status"] == "PERMISSION_DENIED"


def test_server_error_always_until_cleared(client: httpx.Client) -> None:
    box = mailbox(client, "gmail", "e@shop.test")
    auth = {"Authorization": box["auth"]}
    faults(client, "e@shop.test", server_error={"status": 502, "count": "always"})
    assert [client.get(f"{GMAIL}/profile", headers=auth).status_code for _ in range(3)] == [502] * 3
    faults(client, "e@shop.test", server_error={"status": 500, "count": 1})
    assert client.get(f"{GMAIL}/profile", headers=auth).status_code == 500
    assert client.get(f"{GMAIL}/profile", headers=auth).status_code == 200


def test_timeout_and_slow_responses(client: httpx.Client) -> None:
    box = mailbox(client, "gmail", "slow@shop.test")
    auth = {"Authorization": box["auth"]}
    faults(client, "slow@shop.test", timeout={"count": 1, "seconds": 1.0})
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"{GMAIL}/profile", headers=auth, timeout=0.3)
    faults(client, "slow@shop.test", slow_ms=300)
    started = time.monotonic()
    assert client.get(f"{GMAIL}/profile", headers=auth).status_code == 200
    assert time.monotonic() - started >= 0.3
    faults(client, "slow@shop.test")
    assert client.get("/_emulator/mailboxes/slow@shop.test/faults").json()["slow_ms"] == 0


def test_stale_cursor_fault_gmail(client: httpx.Client) -> None:
    box = mailbox(client, "gmail", "c@shop.test")
    auth = {"Authorization": box["auth"]}
    start = client.get(f"{GMAIL}/profile", headers=auth).json()["historyId"]
    faults(client, "c@shop.test", stale_cursor={"count": 1})
    params = {"startHistoryId": start}
    assert client.get(f"{GMAIL}/history", headers=auth, params=params).status_code == 404
    assert client.get(f"{GMAIL}/history", headers=auth, params=params).status_code == 200


def test_unknown_fault_keys_are_rejected(client: httpx.Client) -> None:
    mailbox(client, "gmail", "k@shop.test")
    answer = client.put("/_emulator/mailboxes/k@shop.test/faults", json={"throttle": 1})
    assert answer.status_code == 422


# --- push notifications -----------------------------------------------------------------------


def test_gmail_push_signed_jwt_and_coalescing(
    client: httpx.Client, receiver: Receiver, emulator: EmulatorHandle
) -> None:
    box = mailbox(client, "gmail", "push@shop.test")
    push_url = f"{receiver.url}/gmail"
    client.put("/_emulator/push", json={"gmail_push_url": push_url})
    watch = client.post(
        f"{GMAIL}/watch",
        headers={"Authorization": box["auth"]},
        json={"topicName": "projects/p/topics/gmail", "labelIds": ["INBOX"]},
    )
    assert watch.status_code == 200 and int(watch.json()["expiration"]) > time.time() * 1000
    eventually(lambda: len(receiver.received("gmail")) == 1)

    push = receiver.received("gmail")[0]
    scheme, _, token = push["headers"]["authorization"].partition(" ")
    assert scheme == "Bearer"
    jwks = jwt.PyJWKClient(f"{emulator.url}/_emulator/oauth2/v3/certs")
    claims = jwt.decode(
        token,
        jwks.get_signing_key_from_jwt(token).key,
        algorithms=["RS256"],
        audience=push_url,
        issuer="https://accounts.google.com",
    )
    assert claims["email"] == CONFIG.service_account_email and claims["email_verified"] is True
    message = push["json"]["message"]
    data = json.loads(base64.urlsafe_b64decode(message["data"] + "=" * (-len(message["data"]) % 4)))
    assert data == {"emailAddress": "push@shop.test", "historyId": int(watch.json()["historyId"])}
    assert push["json"]["subscription"] == "projects/emulator/subscriptions/gmail-push"
    assert message["messageId"] and message["publishTime"]

    for _ in range(4):  # a burst inside the 0.5 s window coalesces into one more push
        add(client, "push@shop.test")
    eventually(lambda: len(receiver.received("gmail")) == 2)
    time.sleep(0.7)
    pushes = receiver.received("gmail")
    assert len(pushes) == 2
    last = json.loads(base64.urlsafe_b64decode(pushes[1]["json"]["message"]["data"] + "=="))
    state = client.get("/_emulator/mailboxes/push@shop.test").json()
    assert last["historyId"] == state["history_id"]
    stats = client.get("/_emulator/mailboxes/push@shop.test/stats").json()
    assert [d["status"] for d in stats["deliveries"]] == [202, 202]

    add(client, "push@shop.test", labels=["SPAM"])  # outside the watch's label filter
    time.sleep(0.7)
    assert len(receiver.received("gmail")) == 2


def test_push_audience_is_configurable(
    client: httpx.Client, receiver: Receiver, emulator: EmulatorHandle
) -> None:
    box = mailbox(client, "gmail", "aud@shop.test")
    client.put(
        "/_emulator/push",
        json={"gmail_push_url": f"{receiver.url}/gmail", "gmail_push_audience": "syncguard-push"},
    )
    client.post(
        f"{GMAIL}/watch",
        headers={"Authorization": box["auth"]},
        json={"topicName": "projects/p/topics/gmail"},
    )
    eventually(lambda: len(receiver.received("gmail")) == 1)
    token = receiver.received("gmail")[0]["headers"]["authorization"].split(" ")[1]
    key = jwt.PyJWKClient(f"{emulator.url}/_emulator/oauth2/v3/certs").get_signing_key_from_jwt(
        token
    )
    assert jwt.decode(token, key.key, algorithms=["RS256"], audience="syncguard-push")["aud"] == (
        "syncguard-push"
    )


def test_drop_and_duplicate_notifications(client: httpx.Client, receiver: Receiver) -> None:
    box = mailbox(client, "outlook", "dd@shop.test")
    assert subscribe(client, box["auth"], f"{receiver.url}/dd", 60).status_code == 201
    faults(client, "dd@shop.test", drop_notifications={"count": 1})
    dropped = add(client, "dd@shop.test")["id"]
    kept = add(client, "dd@shop.test")["id"]
    eventually(lambda: len(receiver.received("dd")) == 1)
    time.sleep(0.2)
    ids = [c["json"]["value"][0]["resourceData"]["id"] for c in receiver.received("dd")]
    assert ids == [kept] and dropped not in ids
    assert (
        client.get("/_emulator/mailboxes/dd@shop.test/stats").json()["notifications_dropped"] == 1
    )

    receiver.clear()
    faults(client, "dd@shop.test", duplicate_notifications=True)
    twice = add(client, "dd@shop.test")["id"]
    eventually(lambda: len(receiver.received("dd")) == 2)
    ids = [c["json"]["value"][0]["resourceData"]["id"] for c in receiver.received("dd")]
    assert ids == [twice, twice]

    receiver.clear()
    faults(client, "dd@shop.test", drop_notifications={"probability": 1.0})
    add(client, "dd@shop.test")
    time.sleep(0.3)
    assert receiver.received("dd") == []


def test_expired_subscription_gets_no_notifications(
    client: httpx.Client, receiver: Receiver
) -> None:
    box = mailbox(client, "outlook", "exp@shop.test")
    sub = subscribe(client, box["auth"], f"{receiver.url}/exp", 60).json()
    client.post(f"/_emulator/subscriptions/{sub['id']}/expire")
    add(client, "exp@shop.test")
    time.sleep(0.3)
    assert receiver.received("exp") == []
