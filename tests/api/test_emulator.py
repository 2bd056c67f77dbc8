"""End to end over real HTTP: the emulator pushes (signed with its own key) to the served API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import Engine

from models import Provider, Store, SyncTrigger
from providers.emulator import running_emulator
from syncguard.db import service_session
from tests.api.conftest import CREATED_IDS, SERVICE_ACCOUNT, deliveries, new_subscription, serve
from tests.sync_support import connect_store, eventually, jobs_of


def access_token(emulator_url: str, mailbox: object) -> str:
    creds = mailbox.credentials  # type: ignore[attr-defined]
    form = {
        "grant_type": "refresh_token",
        "refresh_token": creds.refresh_token,
        "client_id": creds.client_id,
        "client_secret": creds.client_secret,
    }
    response = httpx.post(f"{emulator_url}/oauth2/token", data=form)
    response.raise_for_status()
    return str(response.json()["access_token"])


def test_emulator_pushes_reach_the_api_and_enqueue_syncs(engine: Engine) -> None:
    from api import create_app
    from syncguard.settings import Settings

    with running_emulator() as emulator:
        settings = Settings(
            gmail_push_jwks_url=f"{emulator.url}/_emulator/oauth2/v3/certs",
            gmail_push_service_account=SERVICE_ACCOUNT,
        )
        api_url, server, thread = serve(create_app(settings))
        try:
            # Gmail: a watch sends one signed push at once.
            httpx.put(
                f"{emulator.url}/_emulator/push",
                json={
                    "gmail_push_url": f"{api_url}/webhooks/gmail",
                    "service_account_email": SERVICE_ACCOUNT,
                },
            ).raise_for_status()
            gmail_store, gmail_box = connect_store(engine, emulator, Provider.GMAIL)
            CREATED_IDS.add(str(gmail_store))
            token = access_token(emulator.url, gmail_box)
            httpx.post(
                f"{emulator.url}/gmail/v1/users/me/watch",
                json={"topicName": "projects/p/topics/t"},
                headers={"Authorization": f"Bearer {token}"},
            ).raise_for_status()

            [job] = eventually(lambda: jobs_of(engine, gmail_store), timeout_s=15)
            assert job.trigger is SyncTrigger.WEBHOOK
            delivery = eventually(lambda: gmail_box.stats()["deliveries"], timeout_s=15)[0]
            assert (delivery["kind"], delivery["status"]) == ("gmail_push", 204)

            # Graph: creating a subscription validates both URLs; a new message notifies.
            outlook_store, outlook_box = connect_store(engine, emulator, Provider.OUTLOOK)
            CREATED_IDS.add(str(outlook_store))
            client_state = uuid.uuid4().hex
            created = httpx.post(
                f"{emulator.url}/v1.0/subscriptions",
                json={
                    "changeType": "created,updated,deleted",
                    "notificationUrl": f"{api_url}/webhooks/outlook",
                    "lifecycleNotificationUrl": f"{api_url}/webhooks/outlook/lifecycle",
                    "resource": "/me/mailFolders('inbox')/messages",
                    "expirationDateTime": (datetime.now(UTC) + timedelta(days=2)).isoformat(),
                    "clientState": client_state,
                },
                headers={"Authorization": f"Bearer {access_token(emulator.url, outlook_box)}"},
            )
            assert created.status_code == 201, created.text
            graph_id = created.json()["id"]
            new_subscription(engine, _store(engine, outlook_store), client_state, graph_id)

            outlook_box.add("hello")
            [job] = eventually(lambda: jobs_of(engine, outlook_store), timeout_s=15)
            assert job.trigger is SyncTrigger.WEBHOOK
            rows = eventually(lambda: deliveries(engine, webhook_id=graph_id), timeout_s=15)
            assert (rows[0].success, rows[0].response_code) == (True, 202)
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def _store(engine: Engine, store_id: uuid.UUID) -> Store:
    with service_session(engine) as session:
        store = session.get(Store, store_id)
        assert store is not None
        return store
