"""The audit pages in a real headless Chromium (Debian's, driven by Playwright), against
the server on a real port: sign in, a week, a lesson, a turned-away attempt in its
history, one version back, a lesson turning from requested to generated without a reload
while the worker runs, sign out; another provider's lesson is a 403 that shows nothing;
an admin's operations and erasures; the log's proof, a checkpoint kept and an edit named.
With LESSON_LEDGER_UPDATE_SCREENSHOTS=1 they write the README's screenshots."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from adapters.worker import start_worker_in_background
from projections.merkle.checkpoint import Checkpoint
from projections.merkle.verify import verify_checkpoint
from tests.support.browser import launched, screenshot
from tests.support.http import OTHER_PROVIDER, PROVIDER
from tests.support.projections import wait_until
from tests.support.served import Api, served

pytestmark = pytest.mark.timeout(180)
WEEK = "2025-09-08"
WAIT_MS = 15_000


def seed(api: Api) -> dict[str, str]:
    """A provider's week at a school: three lessons, one of them contested by a second
    tab of the calendar (another spelling of its slot) and one with a topic holding
    markup; returns lesson ids by slot."""
    ids = {}
    mine = api.auth("provider", PROVIDER)
    for day, slot, topic in [
        ("2025-09-08", "8:30-9:00", "short vowels"),
        ("2025-09-09", "09:00-09:30", "<script>alert('topic')</script>"),
        ("2025-09-10", "10:00-10:30", "fractions"),
    ]:
        details = {
            "students": [{"id": "st-1", "grade": 2, "iepGoals": ["IEP-GOAL-MARKER"]}],
            "subject": "Reading",
            "subjectType": "ela",
            "topic": topic,
        }
        body = {
            "schoolId": "school-1",
            "lessonDate": day,
            "timeSlot": slot,
            "requestId": f"tab-1-{day}",
            "correlationId": "week-37-tab-1",
            "details": details,
        }
        response = api.client.post("/v1/lessons/requests", json=body, headers=mine)
        assert response.status_code == 201, response.text
        ids[slot] = response.json()["lesson_id"]
    contested = {
        "schoolId": "school-1",
        "lessonDate": "2025-09-08",
        "timeSlot": "08:30 - 09:00",
        "requestId": "tab-2-2025-09-08",
        "details": {"students": [{"id": "st-2", "grade": 2}], "subject": "Reading"},
    }
    response = api.client.post("/v1/lessons/requests", json=contested, headers=mine)
    assert response.status_code == 409, response.text
    api.app.state.read_model.wait_for(api.app.state.read_model.head(), timeout=10)
    return ids


def sign_in(page: Any, base_url: str, token: str) -> None:
    page.goto(f"{base_url}/calendar?week={WEEK}")
    page.wait_for_url(re.compile(r"/sign-in\?next="))
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/calendar"))


@contextmanager
def admin_page(api: Api, chromium: str, width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A page of a headless Chromium with the admin signed in."""
    api.auth("admin")
    with launched(chromium) as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(WAIT_MS)
        sign_in(page, api.base_url, api.tokens["admin:None"])
        yield page


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with served(f"sqlite:///{tmp_path / 'ledger.db'}") as running:
        yield running


def test_an_auditor_reads_a_week_a_lesson_and_its_history_and_watches_it_generated(
    api: Api, chromium: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    ids = seed(api)
    api.auth("provider", PROVIDER)
    token = api.tokens[f"provider:{PROVIDER}"]
    with launched(chromium) as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        dialogs: list[str] = []

        def dismissed(dialog: Any) -> None:
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", dismissed)
        sign_in(page, api.base_url, token)

        # The week: every slot with its status and attempt, and the turned-away mark.
        expect(page.get_by_role("heading", level=1)).to_have_text("Week of Monday 8 September 2025")
        slots = page.locator("a.slot")
        expect(slots).to_have_count(3)
        contested = page.locator(f'a.slot[data-lesson-id="{ids["8:30-9:00"]}"]')
        expect(contested).to_contain_text("… requested")
        expect(contested).to_contain_text("attempt 1")
        expect(contested).to_contain_text("⚠ 1 turned away")
        screenshot(page, "calendar", tmp_path)
        # The provider's id whole in its field (its last character was cut off).
        assert page.locator("#provider_id").evaluate("e => e.scrollWidth <= e.clientWidth")

        # The week at a phone's width: still every lesson, one below the other.
        phone = context.new_page()  # the same session
        phone.set_viewport_size({"width": 390, "height": 844})
        phone.goto(f"{api.base_url}/calendar?week={WEEK}")
        expect(phone.locator("a.slot")).to_have_count(3)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(phone, "calendar-phone", tmp_path)
        phone.close()

        # Previous and next week, and back by the date field (keyboard only).
        page.get_by_role("link", name="Next week →").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(
            "Week of Monday 15 September 2025"
        )
        expect(page.get_by_text("No lessons this week")).to_be_visible()
        page.get_by_label("Jump to a date").fill("2025-09-10")
        page.get_by_label("Jump to a date").press("Enter")
        expect(page.locator("a.slot")).to_have_count(3)

        # A lesson, and the turned-away attempt in its history: who, when, how spelled, why.
        contested.click()
        page.wait_for_url(re.compile(ids["8:30-9:00"]))
        expect(page.get_by_role("heading", level=1)).to_have_text("Lesson 2025-09-08 08:30-09:00")
        rejected = page.locator("li.entry.rejected")
        expect(rejected).to_have_count(1)
        expect(rejected).to_contain_text("⚠ Turned away")
        expect(rejected).to_contain_text("tab-2-2025-09-08")
        expect(rejected).to_contain_text("time_slot=08:30 - 09:00")
        expect(rejected).to_contain_text("tab-1-2025-09-08")  # the holder, named in why
        opened = page.locator("li.entry").first
        expect(opened).to_contain_text("week-37-tab-1")
        expect(opened).to_contain_text("time_slot=8:30-9:00")
        assert "IEP-GOAL-MARKER" not in page.content()
        screenshot(page, "lesson", tmp_path)

        # One version back: the lesson as it was before the turned-away request.
        page.get_by_role("link", name="← Version 1").click()
        expect(page.get_by_role("heading", name="As it was at version 1")).to_be_visible()
        expect(page.locator("li.entry.current")).to_contain_text("version 1")
        expect(page.get_by_role("heading", level=2, name="Version 1 of 2")).to_be_visible()
        page.get_by_role("link", name="Now", exact=True).click()
        expect(page.locator("#lesson-status")).to_have_text("… requested")

        # Live: the worker generates the lesson; the page changes without a reload.
        calendar = context.new_page()
        calendar.set_default_timeout(WAIT_MS)
        calendar.goto(f"{api.base_url}/calendar?week={WEEK}")
        for open_page in (page, calendar):
            expect(open_page.locator("body[data-live=following]")).to_have_count(1)
            open_page.evaluate("window.notReloaded = true")
        worker = start_worker_in_background(api.app.state.settings.database_url)
        try:
            expect(page.locator("#lesson-status")).to_have_text("✓ generated")
            expect(
                page.get_by_role("heading", name="Worksheet: short vowels practice")
            ).to_be_visible()
            expect(calendar.locator("a.slot.status-generated")).to_have_count(3)
        finally:
            worker.stop()
        assert page.evaluate("window.notReloaded") is True
        assert calendar.evaluate("window.notReloaded") is True
        expect(calendar.locator("#announcer")).to_contain_text("is now generated")
        screenshot(page, "lesson-generated", tmp_path)

        # The topic that held markup is text on the page, never markup.
        page.goto(f"{api.base_url}/lessons/{ids['09:00-09:30']}")
        expect(page.get_by_text("<script>alert('topic')</script>").first).to_be_visible()
        assert dialogs == []  # no script of the topic's ran

        # Conflicts for the period, each row linking to its lesson.
        page.goto(f"{api.base_url}/conflicts?since=2025-01-01")
        contested_row = page.get_by_role("link", name="2025-09-08 08:30-09:00", exact=True)
        expect(contested_row).to_have_attribute("href", f"/lessons/{ids['8:30-9:00']}")
        spelled = page.get_by_role("link", name="school-1 2025-09-08 08:30-09:00", exact=True)
        expect(spelled).to_have_attribute("href", f"/lessons/{ids['8:30-9:00']}")
        screenshot(page, "conflicts", tmp_path)

        # Sign out: the session ends, and the pages ask for a token again.
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_text("You are signed out.")).to_be_visible()
        page.goto(f"{api.base_url}/lessons/{ids['8:30-9:00']}")
        expect(page.get_by_label("API token")).to_be_visible()
        calendar.close()


def test_another_providers_lesson_page_is_a_403_showing_nothing_of_it(
    api: Api, chromium: str
) -> None:
    from playwright.sync_api import expect

    ids = seed(api)
    api.auth("provider", OTHER_PROVIDER)
    with launched(chromium) as browser:
        page = browser.new_page()
        page.set_default_timeout(WAIT_MS)
        sign_in(page, api.base_url, api.tokens[f"provider:{OTHER_PROVIDER}"])
        response = page.goto(f"{api.base_url}/lessons/{ids['8:30-9:00']}")
        assert response is not None and response.status == 403
        expect(page.get_by_role("heading", level=1)).to_have_text("Forbidden")
        shown = page.locator("main").inner_text()
        for detail in ("school-1", "08:30", "2025-09-08", "tab-1", "Reading", PROVIDER):
            assert detail not in shown
        # Its own week is empty: another provider's lessons are not listed.
        page.goto(f"{api.base_url}/calendar?week={WEEK}")
        expect(page.get_by_text("No lessons this week")).to_be_visible()


def test_an_admin_watches_a_rebuild_and_a_verify(api: Api, chromium: str, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    seed(api)
    api.auth("admin")
    with admin_page(api, chromium) as page:
        page.get_by_role("link", name="Operations").click()
        expect(page.get_by_role("row", name=re.compile("^lessons"))).to_contain_text("4")
        page.get_by_role("button", name="Start a verify").click()
        expect(page.get_by_text(re.compile("✓ Verified at position 4"))).to_be_visible()
        page.get_by_role("button", name="Start a rebuild of the lessons table").click()
        expect(page.locator("progress[id^=rebuild]")).to_have_count(0)
        page.get_by_role("button", name="Start a verify").click()
        expect(page.get_by_text(re.compile("✓ Verified at position 4"))).to_be_visible()
        screenshot(page, "operations", tmp_path)


def test_an_admin_on_a_phone_reaches_every_page_without_scrolling_sideways(
    api: Api, chromium: str
) -> None:
    """An admin's five links wrap at a phone's width (they ran 42-45 pixels off the screen,
    so every page scrolled sideways); each page fits."""
    from playwright.sync_api import expect

    seed(api)
    api.auth("admin")
    with admin_page(api, chromium, width=390, height=844) as page:
        nav = page.get_by_role("navigation", name="Pages")
        for name in ("Calendar", "Conflicts", "Proof", "Operations", "Erasures"):
            link = nav.get_by_role("link", name=name)
            box = link.bounding_box()
            assert box is not None and box["x"] + box["width"] <= 390, (name, box)
            link.click()
            expect(page.get_by_role("heading", level=1)).to_be_visible()
            assert page.evaluate("document.documentElement.scrollWidth") <= 390, name


def test_an_admin_finds_a_students_erasure_and_a_retention_run(
    api: Api, chromium: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    seed(api)
    erased = api.client.post(
        "/v1/students/st-1/erasure", json={"reason": "parent's request"}, headers=api.auth("admin")
    )
    assert erased.status_code == 200, erased.text
    api.app.state.audit.checkpoint()  # covers the student's erasure, not the retention run
    api.app.state.erasures.retention(date(2025, 9, 9), actor="retention", reason="daily")
    with admin_page(api, chromium) as page:
        page.get_by_role("link", name="Erasures").click()
        rows = page.get_by_role("table").get_by_role("row")
        expect(rows).to_have_count(3)  # the header, then newest first
        expect(rows.nth(1)).to_contain_text("retention")
        expect(rows.nth(1)).to_contain_text("daily")
        student = rows.nth(2)
        expect(student).to_contain_text("a student")
        expect(student).to_contain_text("parent's request")
        # Its three lessons (the turned-away tab named st-2 and wrote nothing).
        expect(student.get_by_role("cell").nth(5)).to_have_text("3")
        expect(page.get_by_text("covers the first 1 of these records")).to_be_visible()
        expect(student.get_by_role("cell").nth(7)).to_have_text("yes")
        expect(rows.nth(1).get_by_role("cell").nth(7)).to_have_text("not yet")
        expect(page.get_by_text("This server runs no retention")).to_be_visible()
        text = page.content()
        assert "st-1" not in text and "IEP-GOAL-MARKER" not in text
        screenshot(page, "erasures", tmp_path)


def test_an_admin_signs_a_checkpoint_verifies_the_log_and_sees_an_edit_named(
    api: Api, chromium: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    seed(api)
    api.auth("admin")
    audit = api.app.state.audit
    wait_until(lambda: audit.tree.size() == 4, 10, "the tree to take the seeded events")
    with admin_page(api, chromium) as page:
        page.get_by_role("link", name="Proof").click()
        expect(page.get_by_text("none signed yet")).to_be_visible()
        page.get_by_role("button", name="Sign a checkpoint now").click()
        expect(page.get_by_text(re.compile(r"^4 events, signed"))).to_be_visible()
        with page.expect_download() as downloading:
            page.get_by_role("link", name="Download the latest checkpoint").click()
        kept = Checkpoint.from_json(json.loads(Path(downloading.value.path()).read_text()))
        verify_checkpoint(audit.signer.public_key, kept)  # raises unless signed by the ledger
        assert kept.size == 4 and kept.erasures is not None and kept.erasures.count == 0
        covers = page.locator("dt", has_text="Erasure records it covers").locator("+ dd")
        expect(covers).to_have_text("0")
        page.get_by_role("button", name="Verify the log").click()
        intact = page.get_by_text(re.compile("✓ Intact: 4 events up to position 4"))
        expect(intact).to_contain_text("the checkpoint of 4 events and 0 erasure records holds")
        screenshot(page, "proof", tmp_path)

        # An edit made straight in the database, as someone with write access could.
        with sqlite3.connect(tmp_path / "ledger.db") as db:
            db.execute("UPDATE stored_events SET state = state || x'20' WHERE rowid = 2")
        page.get_by_role("button", name="Verify the log").click()
        expect(page.get_by_role("alert")).to_contain_text("diverges at position 2")
        finding = page.get_by_role("listitem").filter(has_text="altered")
        expect(finding).to_contain_text("position 2")
        expect(finding.get_by_role("link")).to_have_attribute("href", re.compile("^/lessons/"))
