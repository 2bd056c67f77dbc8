"""The sync pipeline: the ``sync_store`` task (``pipeline``), its job rows (``jobs``), how a sync
is requested (``requests``) and how provider pages become rows (``mailbox_copy``).

Only ``request_sync`` is exported: importing the pipeline here would load the webhook tasks into
every module that merely requests a sync.
"""

from tasks.sync.requests import request_sync

__all__ = ["request_sync"]
