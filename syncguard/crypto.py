"""Provider credentials encrypted at rest: Fernet tokens under a MultiFernet for key rotation."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncguard.settings import Settings, get_settings

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

# cryptography's Rust bindings (~9 MB of RSS, bench/worker_memory.py) load on first use: every
# worker imports this module (outbound endpoints), few processes encrypt anything while idle.

#: The development/test key file, under ``settings.home``.
KEY_FILE = "encryption.key"
#: Permissions of the key file: owner read/write only.
KEY_FILE_MODE = 0o600


class EncryptionConfigError(RuntimeError):
    """The encryption keys are missing or malformed."""


class DecryptionError(ValueError):
    """A token that no configured key can open (wrong key, or tampered with)."""


class CredentialCipher:
    """Encrypts JSON with the newest key and decrypts with any of them."""

    def __init__(self, keys: Sequence[str | bytes]) -> None:
        if not keys:
            raise EncryptionConfigError("at least one Fernet key is needed")
        from cryptography.fernet import Fernet, MultiFernet

        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key))
            except (ValueError, TypeError) as exc:
                # Never echo the key itself.
                raise EncryptionConfigError(
                    f"encryption key #{position} is not a valid Fernet key "
                    "(32 url-safe base64-encoded bytes)"
                ) from exc
        self._cipher: MultiFernet = MultiFernet(fernets)

    def encrypt_json(self, obj: Any) -> bytes:
        """``obj`` as JSON, encrypted with the newest key."""
        return self._cipher.encrypt(json.dumps(obj, separators=(",", ":")).encode())

    def decrypt_json(self, token: bytes | str) -> Any:
        """The JSON value inside ``token``; DecryptionError if no key opens it."""
        from cryptography.fernet import InvalidToken

        try:
            plain = self._cipher.decrypt(token)
        except InvalidToken:
            raise DecryptionError(
                "credentials cannot be decrypted with any configured key "
                "(check SYNCGUARD_ENCRYPTION_KEYS: keep old keys listed until rotated)"
            ) from None
        return json.loads(plain)

    def rotate(self, token: bytes | str) -> bytes:
        """``token`` re-encrypted with the newest key; DecryptionError if no key opens it."""
        from cryptography.fernet import InvalidToken

        try:
            return self._cipher.rotate(token)
        except InvalidToken:
            raise DecryptionError(
                "credentials cannot be rotated: no configured key opens them"
            ) from None


def _development_key(home: Path) -> str:
    """The key under ``home``, created once (0600, atomically) if it does not exist yet."""
    path = home / KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=home, prefix=".encryption.key.")
        try:
            os.fchmod(fd, KEY_FILE_MODE)
            from cryptography.fernet import Fernet

            os.write(fd, Fernet.generate_key())
            os.close(fd)
            # os.link is atomic: a concurrent creator wins and everyone reads its key.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


def keys_from_settings(settings: Settings) -> list[str]:
    """The configured keys, newest first; in development/test a persisted generated key."""
    configured = [k.strip() for k in settings.encryption_keys.get_secret_value().split(",")]
    keys = [k for k in configured if k]
    if keys:
        return keys
    if settings.environment == "production":
        raise EncryptionConfigError(
            "SYNCGUARD_ENCRYPTION_KEYS is required in production "
            "(comma-separated Fernet keys, newest first)"
        )
    return [_development_key(settings.home)]


def cipher_from_settings(settings: Settings | None = None) -> CredentialCipher:
    """A cipher for ``settings`` (the process settings by default)."""
    return CredentialCipher(keys_from_settings(settings or get_settings()))


def encrypt_json(obj: Any, settings: Settings | None = None) -> bytes:
    """``obj`` as JSON, encrypted with the newest configured key."""
    return cipher_from_settings(settings).encrypt_json(obj)


def decrypt_json(token: bytes | str, settings: Settings | None = None) -> Any:
    """The JSON value inside ``token``, opened with any configured key."""
    return cipher_from_settings(settings).decrypt_json(token)


def rotate(token: bytes | str, settings: Settings | None = None) -> bytes:
    """``token`` re-encrypted with the newest configured key."""
    return cipher_from_settings(settings).rotate(token)
