"""The JSON line formatter: the context's ids on each line, and no secret in any field."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from syncguard import log_context
from syncguard.logging_config import REDACTED, JsonLineFormatter, install_scrubber

KEY = "sgk_" + "K" * 43
BEARER = "ya29.token-" + "t" * 30


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    install_scrubber()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    logger = logging.getLogger(f"test.json.{id(stream)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_carries_the_bound_ids_only_while_they_are_bound(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    with log_context.bound(task_id="t-1", store_id="s-1", job_id=None):
        logger.info("inside")
    logger.info("outside")

    inside, outside = records(stream)
    assert inside["task_id"] == "t-1" and inside["store_id"] == "s-1"
    assert "job_id" not in inside  # None is not bound
    assert {"task_id", "store_id"}.isdisjoint(outside)
    assert (inside["level"], inside["logger"], inside["message"]) == ("INFO", logger.name, "inside")


def test_no_field_holds_a_secret_not_even_a_traceback_or_an_extra(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines
    try:
        raise RuntimeError(f"GET /x?token={BEARER} with Bearer {BEARER} and {KEY}")
    except RuntimeError:
        logger.exception("failed: %s", KEY, extra={"data": {"url": f"/hook?key={KEY}"}})

    text = stream.getvalue()
    [record] = records(stream)
    assert KEY not in text and BEARER not in text
    assert "Traceback" in record["exc_info"] and REDACTED in record["exc_info"]
    assert record["data"]["url"] == f"/hook?key={REDACTED}"


def test_an_unknown_context_field_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log context field"):
        log_context.bind(tenant="x")
