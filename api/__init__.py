"""Inbound webhooks over HTTP; exports ``app`` (``uvicorn api:app``) and ``create_app``."""

from api.app import create_app

app = create_app()

__all__ = ["app", "create_app"]
