"""Provider adapter tests; ``ScriptedServer`` is a real HTTP server whose answers a test scripts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import compat32
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from providers.emulator.runner import EmulatorHandle
from providers.gmail_batch import BATCH_PATH
from providers.oauth import OAuthCredentials


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        """The body as a urlencoded form."""
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class Reply:
    """What to answer: status, JSON body, headers, and an optional delay in seconds."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    #: A text/plain body instead of JSON (Graph's validation handshake).
    text: str | None = None
    #: A body of any type: (bytes, Content-Type).
    raw: tuple[bytes, str] | None = None


Handler = Callable[[Seen], Reply]


class ScriptedServer:
    """Routes each request to ``handler`` and records it in ``requests``."""

    def __init__(self, url: str, requests: list[Seen]) -> None:
        self.url = url
        self.requests = requests
        self.handler: Handler = lambda seen: Reply(404, {"error": "unscripted"})

    def paths(self) -> list[str]:
        """The paths requested so far, in order."""
        return [r.path for r in self.requests]


@contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    """Serve a ScriptedServer on a free local port for the duration of the block."""
    requests: list[Seen] = []
    holder: list[ScriptedServer] = []

    class _Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(
                self.command,
                parts.path,
                parse_qs(parts.query),
                dict(self.headers.items()),
                self.rfile.read(length),
            )
            if parts.path == BATCH_PATH:  # Gmail's batch: each inner call scripted on its own
                reply = _batch_reply(seen, requests, holder[0].handler)
            else:
                requests.append(seen)
                reply = holder[0].handler(seen)
            time.sleep(reply.delay_s)
            if reply.raw is not None:
                payload, kind = reply.raw
            elif reply.text is not None:
                payload, kind = reply.text.encode(), "text/plain"
            else:
                payload = b"" if reply.body is None else json.dumps(reply.body).encode()
                kind = "application/json"
            try:
                self.send_response(reply.status)
                for name, value in {"Content-Type": kind, **reply.headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout tests)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    server = ScriptedServer(f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    holder.append(server)
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


def _batch_reply(seen: Seen, requests: list[Seen], handler: Handler) -> Reply:
    """Answer a Gmail batch as Google does: each inner call through ``handler``, recorded as a
    request of its own, its answer an application/http part with the call's Content-ID."""
    kind = seen.headers.get("Content-Type", "")
    envelope = BytesParser(policy=compat32).parsebytes(
        f"Content-Type: {kind}\r\n\r\n".encode() + seen.body
    )
    boundary = "batch_scripted"
    chunks = []
    for part in envelope.get_payload():
        assert not isinstance(part, str)
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        method, target, _ = payload.split(b"\r\n", 1)[0].decode().split(" ", 2)
        inner = urlsplit(target)
        call = Seen(method, inner.path, parse_qs(inner.query), dict(seen.headers), b"")
        requests.append(call)
        reply = handler(call)
        body = json.dumps(reply.body) if reply.body is not None else ""
        head = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
        content_id = str(part.get("Content-ID", "")).strip("<>")
        chunks.append(
            f"--{boundary}\r\nContent-Type: application/http\r\n"
            f"Content-ID: <response-{content_id}>\r\n\r\n"
            f"HTTP/1.1 {reply.status} X\r\nContent-Type: application/json\r\n{head}\r\n{body}\r\n"
        )
    chunks.append(f"--{boundary}--\r\n")
    return Reply(raw=("".join(chunks).encode(), f"multipart/mixed; boundary={boundary}"))


def token_reply(seen: Seen, token: str = "at-1", expires_in: int = 3600) -> Reply | None:
    """A token-endpoint answer when ``seen`` is a refresh, else None."""
    if seen.path != "/token":
        return None
    return Reply(200, {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})


class Mailbox:
    """A test mailbox in the emulator and a way to drive it."""

    def __init__(self, emulator: EmulatorHandle, provider: str, address: str) -> None:
        self.url = emulator.url
        self.control = httpx.Client(base_url=f"{emulator.url}/_emulator", timeout=10)
        grant = self.control.post("/mailboxes", json={"provider": provider, "address": address})
        grant.raise_for_status()
        self.address = address
        g = grant.json()
        self.credentials = OAuthCredentials(g["client_id"], g["client_secret"], g["refresh_token"])

    def add(self, subject: str, **fields: Any) -> str:
        r = self.control.post(
            f"/mailboxes/{self.address}/messages", json={"subject": subject, **fields}
        )
        r.raise_for_status()
        return str(r.json()["id"])

    def post(self, path: str, **kwargs: Any) -> Any:
        r = self.control.post(f"/mailboxes/{self.address}/{path}", **kwargs)
        r.raise_for_status()
        return r.json() if r.content else None

    def faults(self, **faults: Any) -> None:
        self.control.put(f"/mailboxes/{self.address}/faults", json=faults).raise_for_status()

    def delete(self, message_id: str) -> None:
        self.control.delete(f"/mailboxes/{self.address}/messages/{message_id}").raise_for_status()

    def relabel(self, message_id: str, add: list[str], remove: list[str]) -> None:
        self.post(f"messages/{message_id}/labels", json={"add": add, "remove": remove})

    def state(self) -> dict[str, Any]:
        r = self.control.get(f"/mailboxes/{self.address}")
        r.raise_for_status()
        return dict(r.json())

    def stats(self) -> dict[str, Any]:
        r = self.control.get(f"/mailboxes/{self.address}/stats")
        r.raise_for_status()
        return dict(r.json())
