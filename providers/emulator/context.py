"""The per-app bundle the routes share: config, state, signer, notifier, push settings."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from providers.emulator.config import EmulatorConfig
from providers.emulator.notify import Notifier
from providers.emulator.push import PushSettings, PushSigner
from providers.emulator.state import EmulatorState


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
