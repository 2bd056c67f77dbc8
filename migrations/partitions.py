"""Which reflected tables are partitions of the history tables (0008), for autogenerate.

Partitions are made at run time by Beat, not by a revision: the models describe their parents
only, so autogenerate must not report them as tables to remove.
"""

from __future__ import annotations

import re
from typing import Any

HISTORY_TABLES = ("system_health_metrics", "webhook_delivery_log", "webhook_health_log")
_PARTITION = re.compile(rf"^(?:{'|'.join(HISTORY_TABLES)})_(?:default|p\d{{8}}(?:_ok|_failed)?)$")


def is_history_partition(name: str | None) -> bool:
    """Whether ``name`` is a day, leaf or DEFAULT partition of a history table."""
    return bool(name and _PARTITION.match(name))


def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
    """Alembic's ``include_name`` hook: every name but the history tables' partitions."""
    return not (type_ == "table" and is_history_partition(name))
