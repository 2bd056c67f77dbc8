"""Row-level security statements that 0001, 0003, 0005 and 0007 each spelled out, for new revisions.

Old revisions keep their own copies (a revision must not change behaviour when a helper does).
"""

from __future__ import annotations

SERVICE_ROLE = "syncguard_service"
TENANT_ROLE = "syncguard_tenant"
TENANT_SETTING = "syncguard.business_id"
# The current tenant, or NULL outside a tenant transaction (so a policy matches nothing).
CURRENT_TENANT = f"NULLIF(current_setting('{TENANT_SETTING}', true), '')::uuid"


def protect(table: str, tenant_key: str = "business_id") -> list[str]:
    """SQL that forces RLS on ``table``: the service role sees all, a tenant reads its own rows."""
    return [
        f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {SERVICE_ROLE}",
        f"CREATE POLICY service_all ON {table} FOR ALL TO {SERVICE_ROLE} "
        "USING (true) WITH CHECK (true)",
        f"GRANT SELECT ON {table} TO {TENANT_ROLE}",
        f"CREATE POLICY tenant_read ON {table} FOR SELECT TO {TENANT_ROLE} "
        f"USING ({tenant_key} = {CURRENT_TENANT})",
    ]


def fill_business_id_trigger(table: str) -> str:
    """SQL for 0001's trigger that fills ``business_id`` from ``store_id`` on ``table``."""
    return (
        f"CREATE TRIGGER fill_business_id BEFORE INSERT OR UPDATE OF store_id, business_id "
        f"ON {table} FOR EACH ROW EXECUTE FUNCTION syncguard_fill_business_id()"
    )
