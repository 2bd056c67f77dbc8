"""safeguards.storable: pure functions, plus proof that what they return PostgreSQL stores."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DataError

from safeguards.storable import (
    DIGEST_CHARS,
    REPLACEMENT,
    is_storable,
    storable_fields,
    storable_json,
    storable_optional,
    storable_text,
)

#: Values PostgreSQL refuses as text, and what each must become.
BAD_TEXT = [
    ("Invoice\x00 #42", f"Invoice{REPLACEMENT} #42"),
    ("\x00\x00", REPLACEMENT * 2),
    ("lone \ud800 high", f"lone {REPLACEMENT} high"),
    ("lone \udfff low", f"lone {REPLACEMENT} low"),
    ("reversed \udc00\ud800", f"reversed {REPLACEMENT}{REPLACEMENT}"),
    ("split pair \ud83d\ude00", "split pair \U0001f600"),  # a valid pair held as two code units
    ("Café \x00 \ud800 ✓", f"Café {REPLACEMENT} {REPLACEMENT} ✓"),
]
GOOD_TEXT = ["", "plain", "Café ✓ 日本 \U0001f600", "tab\tand\nnewline", REPLACEMENT]


@pytest.mark.parametrize(("raw", "expected"), BAD_TEXT)
def test_unstorable_characters_become_the_replacement_character(raw: str, expected: str) -> None:
    assert not is_storable(raw)
    assert storable_text(raw) == expected
    assert is_storable(expected)


@pytest.mark.parametrize("value", GOOD_TEXT)
def test_storable_text_is_returned_unchanged(value: str) -> None:
    assert is_storable(value)
    assert storable_text(value) is value
    assert storable_text(value, max_chars=255) is value


def test_an_over_long_value_keeps_its_head_and_a_digest_of_the_whole() -> None:
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    fitted_a, fitted_b = storable_text(long_a, 255), storable_text(long_b, 255)
    assert len(fitted_a) == len(fitted_b) == 255
    assert fitted_a.startswith("a" * (255 - DIGEST_CHARS - 1))
    assert fitted_a != fitted_b  # distinct ids stay distinct
    assert storable_text(long_a, 255) == fitted_a  # and the same id maps the same way
    assert storable_text("a" * 255, 255) == "a" * 255  # exactly at the bound: unchanged


def test_an_over_long_value_with_nul_is_both_cleaned_and_fitted() -> None:
    fitted = storable_text("\x00" * 300, 40)
    assert len(fitted) == 40 and "\x00" not in fitted and is_storable(fitted, 40)


def test_a_bound_too_small_for_the_digest_is_an_error() -> None:
    with pytest.raises(ValueError, match="no room"):
        storable_text("x" * 20, DIGEST_CHARS)


def test_none_passes_through_optional() -> None:
    assert storable_optional(None) is None
    assert storable_optional("a\x00") == f"a{REPLACEMENT}"


def test_json_strings_and_keys_are_made_storable_at_any_depth() -> None:
    value = {"sub\x00ject": ["a\x00", 1, 2.5, None, True, {"x": "\ud800"}], "ok": "fine"}
    assert storable_json(value) == {
        f"sub{REPLACEMENT}ject": [f"a{REPLACEMENT}", 1, 2.5, None, True, {"x": REPLACEMENT}],
        "ok": "fine",
    }
    assert storable_json(("t\x00",)) == [f"t{REPLACEMENT}"]


def test_storable_fields_names_each_field_that_needs_a_change() -> None:
    row = {"subject": "a\x00", "labels": ["ok", "\ud800"], "id": "x" * 300, "sender": None}
    bounds = {"subject": None, "labels": None, "id": 255, "sender": None, "thread": 255}
    assert storable_fields(row, bounds) == ["subject", "labels", "id"]
    assert storable_fields({"subject": "fine"}, {"subject": None}) == []


@pytest.mark.parametrize(("raw", "_expected"), BAD_TEXT)
def test_postgres_stores_what_the_sanitiser_returns(
    engine: Engine, raw: str, _expected: str
) -> None:
    with engine.connect() as conn:
        with pytest.raises((DataError, UnicodeEncodeError)):  # what this module exists for
            conn.execute(text("SELECT CAST(:v AS text)"), {"v": raw})
        conn.rollback()
        stored = conn.execute(text("SELECT CAST(:v AS text)"), {"v": storable_text(raw)})
        assert stored.scalar_one() == storable_text(raw)
        as_json = json.dumps(storable_json({"k": raw}))
        back = conn.execute(text("SELECT CAST(:v AS jsonb) ->> 'k'"), {"v": as_json})
        assert back.scalar_one() == storable_text(raw)


def test_postgres_refuses_nul_in_jsonb_which_storable_json_prevents(engine: Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(DataError):
            conn.execute(text("SELECT CAST(:v AS jsonb)"), {"v": json.dumps({"k": "a\x00"})})
        conn.rollback()
        cleaned = json.dumps(storable_json({"k": "a\x00"}))
        assert conn.execute(text("SELECT CAST(:v AS jsonb) ->> 'k'"), {"v": cleaned}).scalar_one()
