"""The status JSON API under ``/api/v1``: routes, the archive's routes and the read queries."""

from api.v1.routes import router

__all__ = ["router"]
