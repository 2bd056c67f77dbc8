"""``/api/v1/archive``: the dead-letter archive; listing for every key, actions for operators."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from api.api_keys import Principal
from api.auth import Caller, GuardedRoute, read_session, require_operator, scope
from api.params import Listing, NameText, NoteText
from models import FailureCategory, ReviewResolution
from safeguards import dead_letter
from safeguards.dead_letter.archive import ArchivedJob, ArchiveFilter
from safeguards.errors import ArchiveEntryNotFound, ReplayRefused
from tasks.replay import enqueue_archived

router = APIRouter(prefix="/archive", route_class=GuardedRoute)

#: Fields a listing leaves out (they can be large); ``GET /archive/{id}`` has them all.
_HEAVY = frozenset({"error_context", "args", "kwargs", "headers", "options"})


class ReplayRequest(BaseModel):
    """``POST /archive/{id}/replay``: replay again even if already replayed or discarded."""

    model_config = ConfigDict(extra="forbid")
    force: bool = False


class ReviewRequest(BaseModel):
    """``POST /archive/{id}/review``: the reviewer is the key's name."""

    model_config = ConfigDict(extra="forbid")
    note: NoteText | None = None
    resolution: ReviewResolution | None = None


class DiscardRequest(BaseModel):
    """``POST /archive/{id}/discard``: why."""

    model_config = ConfigDict(extra="forbid")
    note: NoteText | None = None


def entry_json(entry: ArchivedJob, *, full: bool = True) -> dict[str, Any]:
    """An entry as JSON-ready data; without the job and error detail unless ``full``."""
    data = dataclasses.asdict(entry)
    return data if full else {k: v for k, v in data.items() if k not in _HEAVY}


def _json(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(jsonable_encoder(payload), status)


@router.get("")
def list_archive(
    caller: Caller,
    window: Listing,
    category: FailureCategory | None = None,
    store_id: uuid.UUID | None = None,
    reviewed: bool | None = None,
    job_type: NameText | None = None,
    business_id: uuid.UUID | None = None,
) -> JSONResponse:
    """Archive entries newest first, filtered by category, store, reviewed, since/until."""
    criteria = ArchiveFilter(
        category=category,
        store_id=store_id,
        business_id=scope(caller, business_id),
        since=window.since,
        until=window.until,
        reviewed=reviewed,
        job_type=job_type,
        limit=window.limit,
    )
    with read_session(caller) as session:
        entries = dead_letter.list_entries(criteria, session=session)
    return _json({"entries": [entry_json(e, full=False) for e in entries]})


@router.get("/{entry_id}")
def show_archive_entry(caller: Caller, entry_id: uuid.UUID) -> JSONResponse:
    """One entry, complete: the job as it would be replayed and the error context."""
    with read_session(caller) as session:
        entry = dead_letter.get_entry(entry_id, session=session)
    if entry is None:
        raise HTTPException(404, f"no dead-letter entry {entry_id}")
    return _json(entry_json(entry))


@router.post("/{entry_id}/replay")
def replay_entry(
    caller: Caller,
    entry_id: uuid.UUID,
    body: Annotated[ReplayRequest | None, Body()] = None,
) -> JSONResponse:
    """Send the entry's task again (operator); 409 if already replayed, unless ``force``."""
    require_operator(caller, "replaying a dead-letter entry")
    force = body.force if body is not None else False
    try:
        result = dead_letter.replay(
            entry_id, enqueue=enqueue_archived, force=force, replayed_by=_reviewer(caller)
        )
    except ArchiveEntryNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except ReplayRefused as exc:
        raise HTTPException(409, str(exc)) from exc
    return _json(dataclasses.asdict(result))


@router.post("/{entry_id}/review")
def review_entry(
    caller: Caller,
    entry_id: uuid.UUID,
    body: Annotated[ReviewRequest | None, Body()] = None,
) -> JSONResponse:
    """Mark the entry reviewed by the key's holder, with an optional note and resolution."""
    require_operator(caller, "reviewing a dead-letter entry")
    review = body or ReviewRequest()
    try:
        entry = dead_letter.review(
            entry_id, reviewer=_reviewer(caller), note=review.note, resolution=review.resolution
        )
    except ArchiveEntryNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return _json(entry_json(entry))


@router.post("/{entry_id}/discard")
def discard_entry(
    caller: Caller,
    entry_id: uuid.UUID,
    body: Annotated[DiscardRequest | None, Body()] = None,
) -> JSONResponse:
    """Resolve the entry as discarded: it will not be replayed without ``force``."""
    require_operator(caller, "discarding a dead-letter entry")
    note = body.note if body is not None else None
    try:
        entry = dead_letter.discard(entry_id, reviewer=_reviewer(caller), note=note)
    except ArchiveEntryNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return _json(entry_json(entry))


def _reviewer(caller: Principal) -> str:
    """The name recorded as reviewer: the key's holder."""
    return caller.name
