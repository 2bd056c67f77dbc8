"""Credentials at rest: round trip, key rotation, wrong keys, the development key file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from syncguard.crypto import (
    CredentialCipher,
    DecryptionError,
    EncryptionConfigError,
    decrypt_json,
    encrypt_json,
    rotate,
)
from syncguard.settings import Settings

CREDENTIALS = {"client_id": "cid", "refresh_token": "1//secret-refresh", "scopes": ["a", "b"]}


def test_round_trip_hides_the_plaintext() -> None:
    cipher = CredentialCipher([Fernet.generate_key()])
    token = cipher.encrypt_json(CREDENTIALS)
    assert b"secret-refresh" not in token
    assert cipher.decrypt_json(token) == CREDENTIALS


def test_rotation_old_key_still_decrypts_and_rotate_moves_to_the_new_key() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    token = CredentialCipher([old]).encrypt_json(CREDENTIALS)

    rotated_cipher = CredentialCipher([new, old])
    assert rotated_cipher.decrypt_json(token) == CREDENTIALS
    rotated = rotated_cipher.rotate(token)

    assert CredentialCipher([new]).decrypt_json(rotated) == CREDENTIALS
    with pytest.raises(DecryptionError):
        CredentialCipher([old]).decrypt_json(rotated)


def test_wrong_key_is_a_clear_error_without_the_key() -> None:
    token = CredentialCipher([Fernet.generate_key()]).encrypt_json(CREDENTIALS)
    other = Fernet.generate_key()
    with pytest.raises(DecryptionError, match="SYNCGUARD_ENCRYPTION_KEYS") as info:
        CredentialCipher([other]).decrypt_json(token)
    assert other.decode() not in str(info.value)
    with pytest.raises(DecryptionError):
        CredentialCipher([other]).rotate(token)


def test_malformed_key_is_a_configuration_error() -> None:
    with pytest.raises(EncryptionConfigError, match="#2"):
        CredentialCipher([Fernet.generate_key(), "not-a-key"])


def test_settings_keys_newest_first(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    before = Settings(encryption_keys=old, home=tmp_path)
    token = encrypt_json(CREDENTIALS, before)

    after = Settings(encryption_keys=f"{new}, {old}", home=tmp_path)
    assert decrypt_json(token, after) == CREDENTIALS
    rotated = rotate(token, after)
    assert decrypt_json(rotated, Settings(encryption_keys=new, home=tmp_path)) == CREDENTIALS
    assert not (tmp_path / "encryption.key").exists()
    assert new not in repr(after)


def test_development_key_is_persisted_0600_and_survives_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    token = encrypt_json(CREDENTIALS, Settings(environment="development", home=home))

    key_file = home / "encryption.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert decrypt_json(token, Settings(environment="test", home=home)) == CREDENTIALS
    assert [p.name for p in home.iterdir()] == ["encryption.key"]


def test_production_without_keys_refuses(tmp_path: Path) -> None:
    with pytest.raises(EncryptionConfigError, match="required in production"):
        encrypt_json(CREDENTIALS, Settings(environment="production", home=tmp_path))
    assert not (tmp_path / "encryption.key").exists()
