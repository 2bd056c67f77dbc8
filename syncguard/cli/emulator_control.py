"""A client of the provider emulator's control API, for the demo (over HTTP: no emulator import)."""

from __future__ import annotations

import time
from typing import Any, Self

import httpx

from models import Provider
from providers.oauth import OAuthCredentials


class DemoError(RuntimeError):
    """The demo cannot be seeded (emulator unreachable, credentials that do not match)."""


class EmulatorControl:
    """A client of the emulator's control API and token endpoint."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def wait_ready(self, timeout_s: float) -> None:
        """Return once the emulator answers; DemoError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self._http.get("/_emulator/push").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise DemoError(f"the emulator at {self.url} did not answer within {timeout_s}s")
            time.sleep(0.2)

    def create_mailbox(self, provider: Provider, address: str) -> OAuthCredentials | None:
        """A new mailbox's credentials, or None when the emulator already has it."""
        body = {"provider": provider.value, "address": address}
        reply = self._call("POST", "/_emulator/mailboxes", json=body, accept=(201, 409))
        if reply.status_code == 409:
            return None
        grant = reply.json()
        return OAuthCredentials(grant["client_id"], grant["client_secret"], grant["refresh_token"])

    def credentials_work(self, credentials: OAuthCredentials) -> bool:
        """True if the emulator's token endpoint accepts ``credentials``."""
        form = {
            "grant_type": "refresh_token",
            "refresh_token": credentials.refresh_token,
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
        }
        reply = self._call("POST", "/oauth2/token", data=form, accept=(200, 400, 401))
        return reply.status_code == 200

    def push_settings(self) -> dict[str, Any]:
        """Where the emulator sends Gmail pushes, and the identity it signs them with."""
        settings: dict[str, Any] = self._call("GET", "/_emulator/push").json()
        return settings

    def set_push(self, gmail_push_url: str, service_account_email: str | None = None) -> None:
        """Send Gmail pushes to ``gmail_push_url`` (and sign them as the given account)."""
        body = {"gmail_push_url": gmail_push_url}
        if service_account_email:
            body["service_account_email"] = service_account_email
        self._call("PUT", "/_emulator/push", json=body)

    def message_count(self, address: str) -> int:
        """How many messages the mailbox holds."""
        return len(self._call("GET", f"/_emulator/mailboxes/{address}").json()["messages"])

    def add_message(self, address: str, subject: str, sender: str) -> str:
        """Add an unread inbox message; returns its id."""
        body = {"subject": subject, "sender": sender}
        reply = self._call("POST", f"/_emulator/mailboxes/{address}/messages", json=body)
        return str(reply.json()["id"])

    def set_faults(self, address: str, faults: dict[str, Any]) -> None:
        """Replace the mailbox's faults ({} clears them)."""
        self._call("PUT", f"/_emulator/mailboxes/{address}/faults", json=faults)

    def _call(
        self, method: str, path: str, *, accept: tuple[int, ...] = (200, 201), **kwargs: Any
    ) -> httpx.Response:
        try:
            reply = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DemoError(f"emulator at {self.url} unreachable: {exc}") from exc
        if reply.status_code not in accept:
            raise DemoError(f"emulator {method} {path} answered {reply.status_code}: {reply.text}")
        return reply
