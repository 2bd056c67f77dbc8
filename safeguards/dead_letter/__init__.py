"""The dead-letter archive: archiving and review (``archive``), entries (``entries``), replay."""

from safeguards.dead_letter.archive import (
    ArchivedJob,
    ArchiveFilter,
    discard,
    get_entry,
    list_entries,
    move_to_dead_letter_queue,
    review,
)
from safeguards.dead_letter.replay import ReplayResult, replay, replay_many

__all__ = [
    "ArchiveFilter",
    "ArchivedJob",
    "ReplayResult",
    "discard",
    "get_entry",
    "list_entries",
    "move_to_dead_letter_queue",
    "replay",
    "replay_many",
    "review",
]
