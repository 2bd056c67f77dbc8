"""The logins ``syncguard up`` hands a person: the dashboard's operator key, Flower's password.

In development both are generated once and kept under ``settings.home`` (mode 0600), so a
restart neither mints a new key nor changes the password, and neither is printed in the log:
the banner names the file. In production nothing is generated: Flower's login comes from
``SYNCGUARD_FLOWER_BASIC_AUTH`` and keys are minted with ``syncguard api-key create``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from syncguard.services import home_dir
from syncguard.settings import Settings

__all__ = [
    "FLOWER_PASSWORD_FILE",
    "FLOWER_USER",
    "OPERATOR_KEY_FILE",
    "OPERATOR_KEY_NAME",
    "FlowerLoginMissing",
    "development_operator_key",
    "flower_basic_auth",
]

#: The development operator key's file, under ``settings.home``.
OPERATOR_KEY_FILE = "operator.key"
#: The name the development operator key is minted under (``api-key list`` shows it).
OPERATOR_KEY_NAME = "development operator (syncguard up)"
#: Flower's development user and the file holding its password, under ``settings.home``.
FLOWER_USER = "syncguard"
FLOWER_PASSWORD_FILE = "flower.password"
#: Random bytes in a generated Flower password.
_PASSWORD_BYTES = 18


class FlowerLoginMissing(RuntimeError):
    """Production with Flower on and no ``SYNCGUARD_FLOWER_BASIC_AUTH``."""


def development_operator_key(settings: Settings) -> Path:
    """The file holding a valid operator key: the one kept there, or a newly minted one.

    A key that no longer verifies (revoked, or the database was reset) is replaced. Raises
    SQLAlchemy's errors when the database cannot be reached.
    """
    from api.api_keys import create_key, verify  # lazy: the API package, only for `up`

    path = home_dir(settings) / OPERATOR_KEY_FILE
    kept = path.read_text().strip() if path.is_file() else ""
    principal = verify(kept) if kept else None
    if principal is None or not principal.is_operator:
        _key_id, plaintext = create_key(None, OPERATOR_KEY_NAME)
        _write_secret(path, plaintext)
    return path


def flower_basic_auth(settings: Settings) -> str:
    """Flower's ``user:password`` login: the setting, else (not in production) a generated one.

    Raises FlowerLoginMissing in production without ``SYNCGUARD_FLOWER_BASIC_AUTH``.
    """
    configured = settings.flower_basic_auth.get_secret_value().strip()
    if configured:
        return configured
    if settings.environment == "production":
        raise FlowerLoginMissing(
            "Flower needs a login in production: set SYNCGUARD_FLOWER_BASIC_AUTH=user:password "
            "(or run `syncguard up --no-flower`)"
        )
    path = home_dir(settings) / FLOWER_PASSWORD_FILE
    if not path.is_file():
        _write_secret(path, secrets.token_urlsafe(_PASSWORD_BYTES))
    return f"{FLOWER_USER}:{path.read_text().strip()}"


def _write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{text}\n".encode())
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
