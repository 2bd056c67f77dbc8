"""Alembic migrations of the syncguard schema (tables, indexes, triggers, roles, RLS)."""
