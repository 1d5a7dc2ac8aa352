"""The week calendar and the lesson page asked for what lies at the ends of what dates and
versions can be: a clear answer, never a 500."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.http import PROVIDER, lesson, sign_in
from tests.support.served import served
from tests.support.stores import Store

REFUSED = "week: must be a date from 0001-01-08 to 9999-12-18, not {week}"
WEEKS = [
    *[(week, 400, REFUSED) for week in ("0001-01-01", "0001-01-07", "9999-12-19", "9999-12-31")],
    *[(week, 200, "No lessons this week") for week in ("0001-01-08", "9999-12-18")],
]


@pytest.mark.parametrize(("week", "status", "says"), WEEKS)
def test_a_week_at_the_calendars_ends_is_refused_naming_week(
    tmp_path: Path, week: str, status: int, says: str
) -> None:
    """Its neighbouring weeks' dates do not exist: it was an OverflowError, a 500."""
    with served(f"sqlite:///{tmp_path / 'ledger.db'}") as api:
        api.auth("admin")  # makes the token
        sign_in(api.client, api.tokens["admin:None"])

        page = api.client.get("/calendar", params={"provider_id": PROVIDER, "week": week})

    assert page.status_code == status, page.text[:300]
    assert says.format(week=week) in page.text


def test_the_lesson_page_as_of_a_version_beyond_64_bits_shows_it_all(store: Store) -> None:
    with served(store.url) as api:
        created = api.client.post(
            "/v1/lessons/requests", json=lesson(providerId=PROVIDER), headers=api.auth("admin")
        )
        assert created.status_code == 201, created.text
        sign_in(api.client, api.tokens["admin:None"])

        page = api.client.get(
            f"/lessons/{created.json()['lesson_id']}", params={"as_of_version": str(10**30)}
        )

    assert page.status_code == 200, page.text[:300]
    assert "OpenedByRequest" in page.text
