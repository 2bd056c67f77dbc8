"""``/dashboard/jobs``: the sync job history page, over the ledger (see ``api.v1.jobs``).

The filter form is a plain GET form (store, state, trigger, created since), so a filtered view
is a link; its "any" choices arrive as empty values, which mean no filter. A value that is not
a store id, a state, a trigger or a moment is answered with the page and a message, never a 500.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import AfterValidator, StringConstraints

from api.auth import authenticate, read_session, scope, settings_of
from api.dashboard import page
from api.params import MAX_NAME_CHARS, storable_line, utc_moment
from api.v1 import queries as v1_queries
from api.v1.jobs import JobFilter, get_job, list_jobs
from models import SyncJobStatus, SyncTrigger

router = APIRouter(prefix="/dashboard/jobs")

#: A filter field as the form sends it: empty means "any" (so not NameText, which needs one).
FormText = Annotated[
    str, StringConstraints(max_length=MAX_NAME_CHARS), AfterValidator(storable_line)
]
FormValue = Annotated[FormText | None, Query()]
T = TypeVar("T")


def _parse(name: str, raw: str | None, parse: Callable[[str], T], problems: list[str]) -> T | None:
    if not raw:
        return None
    try:
        return parse(raw)
    except ValueError:
        problems.append(f"{name} is not valid")  # never quoting the value
        return None


def _moment(raw: str) -> datetime:
    return utc_moment(datetime.fromisoformat(raw))


@router.get("")
def jobs_page(
    request: Request,
    store_id: FormValue = None,
    status: FormValue = None,
    trigger: FormValue = None,
    since: FormValue = None,
    business_id: uuid.UUID | None = None,
) -> Response:
    """The jobs of the caller's stores, newest first, filtered by the form's choices."""
    try:
        principal = authenticate(request)
    except HTTPException:
        return RedirectResponse("/dashboard/login", status_code=303)
    problems: list[str] = []
    criteria = JobFilter(
        store_id=_parse("store", store_id, uuid.UUID, problems),
        business_id=scope(principal, business_id),
        status=_parse("state", status, SyncJobStatus, problems),
        trigger=_parse("trigger", trigger, SyncTrigger, problems),
        since=_parse("since", since, _moment, problems),
        limit=settings_of(request).dashboard_list_limit,
    )
    with read_session(principal) as session:
        stores = v1_queries.store_status(session, criteria.business_id)
        found = [] if problems else list_jobs(session, criteria)
    context: dict[str, Any] = {
        "principal": principal,
        "business_id": criteria.business_id,
        "jobs": found,
        "stores": stores,
        "addresses": {s["store_id"]: s["mailbox_address"] for s in stores},
        "chosen": {"store_id": store_id, "status": status, "trigger": trigger, "since": since},
        "states": list(SyncJobStatus),
        "triggers": list(SyncTrigger),
        "problems": problems,
    }
    return page(request, "jobs.html", context, 400 if problems else 200)


@router.get("/{job_id}")
def job_page(request: Request, job_id: uuid.UUID) -> Response:
    """One job: progress, checkpoint, duration and its archive entry; 404 if not visible."""
    try:
        principal = authenticate(request)
    except HTTPException:
        return RedirectResponse("/dashboard/login", status_code=303)
    with read_session(principal) as session:
        job = get_job(session, job_id)
        stores = v1_queries.store_status(session, scope(principal, None))
    addresses = {s["store_id"]: s["mailbox_address"] for s in stores}
    context = {"principal": principal, "job": job, "job_id": job_id, "addresses": addresses}
    return page(request, "job.html", context, 404 if job is None else 200)
