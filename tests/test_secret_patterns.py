"""One set of secret shapes: every log line and every persisted row masks each of them."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from safeguards.redaction import redact, redact_text
from syncguard.logging_config import JsonLineFormatter, install_scrubber, scrub
from syncguard.secret_patterns import REDACTED

#: One token of each shape syncguard.secret_patterns names, as they are issued.
SHAPES = {
    "jwt": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMTAxNjk0ODQ0NzQzODYyNzY0MzQifQ.sig-Nry_P4J3jVmNHl0w5N",
    "fernet": "gAAAAABmZ3x1c2VjcmV0LXBheWxvYWQtdGhhdC1pcy1sb25nLWVub3VnaA==",
    "google-access": "ya29.a0AfB_byC-secretsecret_secret.secret",
    "google-refresh": "1//0gLongRefreshTokenValue_abc",
    "whsec": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "api-key": "sgk_" + "K" * 43,
    "basic": "Basic dXNlcjpwYXNzd29yZA==",
}
#: The part of each shape that must never be printed (a scheme word may stay).
SECRETS = {name: token.removeprefix("Basic ") for name, token in SHAPES.items()}
#: A URL whose userinfo holds a password.
DSN_PASSWORD = "pa55w0rd-secret"


@contextmanager
def captured(formatter: logging.Formatter) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through ``formatter`` to a buffer, past the process's record scrubber."""
    install_scrubber()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.secret_patterns.{id(stream)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("name", list(SHAPES))
def test_a_log_line_message_argument_and_traceback_never_show_the_token(name: str) -> None:
    token = SHAPES[name]

    with captured(logging.Formatter("%(levelname)s %(message)s")) as (logger, stream):
        logger.warning(f"refresh answered 401 for {token}")
        logger.warning("calling the provider with %s", token)
        try:
            raise RuntimeError(f"token {token} refused")
        except RuntimeError:
            logger.exception("sync failed")

    output = stream.getvalue()
    assert SECRETS[name] not in output
    assert output.count(REDACTED) >= 3
    assert "refresh answered 401 for" in output and "Traceback" in output


def test_a_json_log_line_never_shows_a_token_in_any_field() -> None:
    with captured(JsonLineFormatter()) as (logger, stream):
        logger.error("tokens", extra={"data": {"seen": list(SHAPES.values())}})

    output = stream.getvalue()
    assert all(secret not in output for secret in SECRETS.values()), output
    assert output.count(REDACTED) == len(SHAPES)


def test_a_process_configured_by_syncguard_prints_no_token_on_stderr() -> None:
    # The real output of a process that set up logging as every syncguard process does.
    program = (
        "import logging, sys\n"
        "from syncguard.logging_config import configure_logging\n"
        "configure_logging('INFO', 'text')\n"
        "tokens = sys.argv[1:]\n"
        "logging.getLogger('providers.gmail').warning('401 with %s', ' '.join(tokens))\n"
        "logging.getLogger('syncguard').error('connect postgresql://app:%s@db/x failed',"
        f" {DSN_PASSWORD!r})\n"
    )
    argv = [sys.executable, "-c", program, *SHAPES.values()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)

    output = done.stdout + done.stderr
    assert "401 with" in output and "postgresql://app:" in output
    assert all(secret not in output for secret in SECRETS.values()), output
    assert DSN_PASSWORD not in output


@pytest.mark.parametrize("name", list(SHAPES))
def test_the_log_scrubber_and_the_redaction_mask_the_same_shapes(name: str) -> None:
    text = f"provider said: {SHAPES[name]} (retrying)"

    for masked in (scrub(text), redact_text(text), redact({"note": text})["note"]):
        assert SECRETS[name] not in masked
        assert masked.startswith("provider said: ") and masked.endswith(" (retrying)")
        assert REDACTED in masked
