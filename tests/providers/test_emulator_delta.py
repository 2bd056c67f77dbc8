"""The emulator's Graph delta pages by its change index: each change once, at its latest seq."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from providers.emulator.runner import EmulatorHandle, running_emulator
from tests.providers.test_emulator import CONFIG, add, delta_round, mailbox

ADDRESS = "delta@shop.test"
DELTA = f"/v1.0/users/{ADDRESS}/mailFolders/inbox/messages/delta"


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(CONFIG) as handle:
        yield handle


def test_changes_made_mid_round_wait_for_the_next_round_and_appear_once(
    emulator: EmulatorHandle,
) -> None:
    with httpx.Client(base_url=emulator.url, timeout=5) as client:
        box = mailbox(client, "outlook", ADDRESS)
        ids = [add(client, ADDRESS, subject=f"m{i}")["id"] for i in range(6)]
        add(client, ADDRESS, subject="elsewhere", folder="archive")
        headers = {"Authorization": box["auth"], "Prefer": "odata.maxpagesize=2"}
        first = client.get(DELTA, headers=headers).json()
        assert [m["id"] for m in first["value"]] == ids[:2]  # in the order they changed

        # Mid-round: one served message and one not yet served change, one goes away
        control = f"/_emulator/mailboxes/{ADDRESS}/messages"
        client.post(f"{control}/{ids[0]}/labels", json={"add": ["Red"]}).raise_for_status()
        client.post(f"{control}/{ids[3]}/labels", json={"add": ["Red"]}).raise_for_status()
        client.delete(f"{control}/{ids[5]}").raise_for_status()
        rest, link, _ = delta_round(client, first["@odata.nextLink"], box["auth"], 2)

        # The round ends at the state it began with: what changed since waits for the next
        assert [m["id"] for m in rest] == [ids[2], ids[4]]
        changes, _, _ = delta_round(client, link, box["auth"], 2)
        by_id = {c["id"]: c for c in changes}
        assert len(changes) == 3 and by_id.keys() == {ids[0], ids[3], ids[5]}
        assert by_id[ids[0]]["categories"] == ["Red"] == by_id[ids[3]]["categories"]
        assert by_id[ids[5]]["@removed"] == {"reason": "deleted"}
