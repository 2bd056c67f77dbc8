"""``/dashboard``: the operators' and tenants' page, server-rendered, with a small local script.

Log in with an API key typed into the form (``POST /dashboard/login``): a key never travels in a
URL, where browser history, proxies and access logs would keep it, so ``GET /dashboard/login``
with a query string is refused. A login opens a server-side session (``api.sessions``): the
HttpOnly, SameSite=Strict cookie carries a random session token, not the key, so logging out or
revoking the key ends the session whoever still holds the cookie.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import redis
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select

from api.api_keys import Principal, verify
from api.auth import GuardedRoute, authenticate, read_session, scope, settings_of
from api.sessions import end_session, open_session
from api.v1 import queries as v1_queries
from api.v1.archive import entry_json
from models import AlertStatus, SystemHealthMetric
from safeguards import dead_letter
from safeguards.dead_letter.archive import ArchiveFilter
from safeguards.errors import SafeguardUnavailable
from safeguards.health_metrics.trends import metric_trend
from safeguards.rate_limit.app_quota import get_app_quota_pool

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
#: Served at ``/dashboard/static``: the page's script and stylesheet (no CDN).
static_files = StaticFiles(directory=HERE / "static")
#: Metrics charted on the page: the most sampled ones in the window.
CHARTED_METRICS = 4
#: Largest login form body read, bytes (a key is 47 characters).
LOGIN_BODY_MAX_BYTES = 4096
#: Longest string the login form takes for a key, characters.
LOGIN_KEY_MAX_CHARS = 200
#: Only our own files, no inline script, no third party.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
#: Why a key in a link is refused, shown on the login page.
KEY_IN_URL = (
    "API keys are not accepted in links: a URL is kept in browser history, proxies and server "
    "logs. Paste the key into the form below."
)

# GuardedRoute, as /api/v1: our own outage (database, Redis down) answers 503, never 500.
router = APIRouter(prefix="/dashboard", route_class=GuardedRoute)


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    """Render template ``name``: our own files only (CSP), never cached, no referrer."""
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Cache-Control"] = "no-store"
    # The login URL may carry a pasted key: never pass it on to another page or site.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    """The login form; 400 (the form, saying why) for a URL with a query string."""
    if request.url.query:
        return page(request, "login.html", {"error": KEY_IN_URL}, 400)
    return page(request, "login.html", {"error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the typed key; open a session and set its cookie (303 to the page), else 400/401.

    A POST whose URL has a query string is refused like the GET link: a script that puts the key
    in the URL as well as the form would otherwise log in with a key that travelled in a URL.
    """
    if request.url.query:
        return page(request, "login.html", {"error": KEY_IN_URL}, 400)
    body = await request.body()
    if len(body) > LOGIN_BODY_MAX_BYTES:
        return page(request, "login.html", {"error": "The login form is too large."}, 413)
    form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10)
    key = (form.get("key") or [""])[0].strip()
    problem = _key_problem(key)
    if problem is not None:
        return page(request, "login.html", {"error": problem}, 400)
    principal = verify(key)
    if principal is None:
        return page(request, "login.html", {"error": "That API key is invalid or revoked."}, 401)
    return _logged_in(request, principal)


def _key_problem(key: str) -> str | None:
    """Why ``key`` cannot be an API key (never quoting it), or None."""
    if not key:
        return "Paste an API key."
    if len(key) > LOGIN_KEY_MAX_CHARS:
        return "That is not an API key: it is too long."
    # Control characters (NUL above all: PostgreSQL text cannot hold it) and lone surrogates
    # are never part of a key; refused here, they never reach the key lookup's SQL.
    if not key.isprintable():
        return "That is not an API key: it contains a control character."
    return None


def _logged_in(request: Request, principal: Principal) -> Response:
    settings = settings_of(request)
    token = open_session(principal, settings.dashboard_cookie_max_age_s)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        settings.dashboard_cookie_name,
        token,
        max_age=settings.dashboard_cookie_max_age_s,
        path="/",
        httponly=True,
        samesite="strict",
        # Secure wherever HTTPS is in use; development and tests serve plain HTTP on loopback,
        # where a Secure cookie would be dropped by the browser or client.
        secure=settings.dashboard_cookie_secure
        or settings.environment == "production"
        or request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """End the session on the server and forget its cookie; 303 to the login form."""
    settings = settings_of(request)
    token = request.cookies.get(settings.dashboard_cookie_name)
    if token:
        end_session(token)
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(settings.dashboard_cookie_name, path="/")
    return response


@router.get("")
def dashboard(request: Request, business_id: uuid.UUID | None = None) -> Response:
    """The page: circuits, rate limits, subscriptions, archive, alerts and metric trends."""
    try:
        principal = authenticate(request)
    except HTTPException:
        return RedirectResponse("/dashboard/login", status_code=303)
    business = scope(principal, business_id)
    context = collect(principal, business, settings_of(request).dashboard_list_limit)
    return page(request, "dashboard.html", context)


def collect(principal: Principal, business: uuid.UUID | None, limit: int) -> dict[str, Any]:
    """Everything the page shows, read in one transaction as ``principal``."""
    now = datetime.now(UTC)
    since = now - timedelta(hours=6)
    with read_session(principal) as session:
        stores = v1_queries.store_status(session, business)
        archive = dead_letter.list_entries(
            ArchiveFilter(business_id=business, limit=limit), session=session
        )
        alerts = v1_queries.alerts(session, business, None, limit)
        table = SystemHealthMetric
        names = session.execute(
            select(table.metric_name, func.count())
            .where(
                table.measured_at >= since,
                table.business_id.is_(None) if business is None else table.business_id == business,
            )
            .group_by(table.metric_name)
            .order_by(func.count().desc(), table.metric_name)
            .limit(CHARTED_METRICS)
        ).all()
        trends = [
            {
                "name": name,
                "points": [
                    [p.bucket_start.isoformat(), p.avg, p.min, p.max]
                    for p in metric_trend(
                        name, since=since, until=now, business_id=business, session=session
                    )
                ],
            }
            for name, _count in names
        ]
        circuits = v1_queries.circuits(session, business)
        subscriptions = v1_queries.subscriptions(session, business)
    addresses = {s["store_id"]: s["mailbox_address"] for s in stores}
    return {
        "apps": app_quotas() if principal.is_operator else [],
        "principal": principal,
        "business_id": business,
        "now": now,
        "stores": stores,
        "circuits": circuits,
        "subscriptions": subscriptions,
        "archive": [entry_json(e, full=False) for e in archive],
        "alerts": alerts,
        "trends": trends,
        "addresses": addresses,
        "open_alerts": sum(a["status"] == AlertStatus.OPEN for a in alerts),
        "open_circuits": sum(c["state"] != "closed" for c in circuits),
        "backlog": sum(s["archive_backlog"] for s in stores),
    }


def app_quotas() -> list[dict[str, Any]] | None:
    """Each provider app's live quota usage (Redis only); None when Redis cannot be read.

    Operators only: an app's quota is spent by every business whose mailboxes use it.
    """
    try:
        return [asdict(usage) for usage in get_app_quota_pool().usages()]
    except (redis.RedisError, SafeguardUnavailable):
        log.warning("dashboard: provider-app quotas unreadable", exc_info=True)
        return None


def _when(moment: datetime | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM UTC`` (an em dash for none)."""
    return "—" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _relative(moment: datetime | None) -> str:
    """``5 min ago`` or ``in 3 h``."""
    if moment is None:
        return "—"
    seconds = (moment - datetime.now(UTC)).total_seconds()
    size = abs(seconds)
    for unit, width in (("d", 86400), ("h", 3600), ("min", 60)):
        if size >= width:
            amount = f"{size / width:.0f} {unit}"
            break
    else:
        amount = f"{size:.0f} s"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


templates.env.filters["when"] = _when
templates.env.filters["relative"] = _relative
