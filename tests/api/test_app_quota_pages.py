"""A provider app's quota on the operator's dashboard (headless chromium) and in ``/metrics``."""

from __future__ import annotations

import uuid
from dataclasses import replace

import httpx
from sqlalchemy import Engine

from api.api_keys import create_key
from models import Provider
from safeguards.rate_limit.app_limits import OUTLOOK_APP_QUOTA, AppId
from safeguards.rate_limit.app_quota import AppQuotaPool
from safeguards.redis_state import get_redis
from tests.api.test_dashboard_browser import Page, browser, log_in  # noqa: F401 (a fixture)
from tests.api.test_prometheus import sample, scrape
from tests.api.test_v1 import seed_business

#: Graph's window, a quota of 40 requests: a block of 10 shows as a quarter.
QUOTA = replace(OUTLOOK_APP_QUOTA, limit=40)


def spent_app(units: int) -> tuple[AppId, AppQuotaPool]:
    """A Graph app (one tenant) whose worker spent ``units`` of one leased block of 10."""
    app = AppId(Provider.OUTLOOK, f"app-{uuid.uuid4().hex[:8]}", "tenant-d")
    pool = AppQuotaPool(get_redis(), quota_of=lambda _app: QUOTA)
    assert pool.take(app, units).allowed
    return app, pool


def test_metrics_expose_each_apps_quota_and_use(client: httpx.Client) -> None:
    app, pool = spent_app(7)
    assert not pool.take(app, QUOTA.limit + 1).allowed  # refused, and counted
    samples = scrape(client)
    labels = {"provider": "outlook", "app": app.name}
    assert sample(samples, "syncguard_metrics_source_up", source="app_quota") == 1.0
    assert sample(samples, "syncguard_app_quota_limit_units", **labels) == QUOTA.limit
    # One block of 10 leased; the refused request gave its 3 unspent units back
    assert sample(samples, "syncguard_app_quota_used_units", **labels) == 7
    assert sample(samples, "syncguard_app_quota_granted_units_total", **labels) == 10
    assert sample(samples, "syncguard_app_quota_returned_units_total", **labels) == 3
    assert sample(samples, "syncguard_app_quota_refusals_total", **labels) == 1
    assert sample(samples, "syncguard_app_quota_window_seconds", **labels) == 10


def test_the_operator_sees_each_apps_usage_and_a_tenant_does_not(
    api_url: str,
    engine: Engine,
    browser: Page,  # noqa: F811 (the fixture imported above)
) -> None:
    app, _pool = spent_app(7)
    log_in(browser, api_url, create_key(None, "Olivia Operator")[1])
    selector = f'.app-quota[data-app="{app.name}"]'
    text = browser.wait_for(f"document.querySelector('{selector}')?.innerText")
    assert app.name in text and f"10 / {QUOTA.limit}" in text
    # The page's script drew the bar from the usage (CSP: no inline style)
    width = browser.evaluate(f"document.querySelector('{selector} .fill').style.width")
    assert width.endswith("%") and float(width[:-1]) > 0
    assert browser.errors == []

    tenant = seed_business("Initrode")
    browser.evaluate("document.querySelector('form[action=\"/dashboard/logout\"]').submit()")
    browser.wait_for("location.pathname === '/dashboard/login'")
    log_in(browser, api_url, tenant.key)
    assert browser.evaluate("document.getElementById('app-quotas')") is None
