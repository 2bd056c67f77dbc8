"""The per-app bundle the routes share: config, state, signer, notifier, push settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from providers.emulator.config import EmulatorConfig
from providers.emulator.state import EmulatorState

if TYPE_CHECKING:
    from providers.emulator.notify import Notifier
    from providers.emulator.oauth import PushSigner


@dataclass
class PushSettings:
    """Where Gmail pushes go and how their OIDC token looks (changeable at runtime)."""

    gmail_push_url: str | None
    gmail_push_audience: str | None
    service_account_email: str

    def as_json(self) -> dict[str, object]:
        """The settings as the control API shows them."""
        return {
            "gmail_push_url": self.gmail_push_url,
            "gmail_push_audience": self.gmail_push_audience,
            "service_account_email": self.service_account_email,
        }


@dataclass
class EmulatorContext:
    """Everything one emulator app owns."""

    config: EmulatorConfig
    state: EmulatorState
    signer: PushSigner
    notifier: Notifier
    push: PushSettings


def context(request: Request) -> EmulatorContext:
    """The emulator context of the app serving this request."""
    ctx: EmulatorContext = request.app.state.emulator
    return ctx
