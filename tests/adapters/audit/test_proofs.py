"""Proofs as an auditor gets them, over HTTP and in an export, checked by the standalone
verification (`projections.merkle.verify`: the public key, a checkpoint and a proof,
no database): a genuine proof holds; altered bytes, a wrong signature and a checkpoint
signed by another key do not. And the consistency proof between two checkpoints."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from adapters.audit.ledger_audit import LedgerAudit
from projections.merkle.checkpoint import Checkpoint
from projections.merkle.verify import (
    EventProof,
    InvalidCheckpoint,
    InvalidProof,
    verify_consistency,
    verify_event,
)
from tests.support.command_line import cli
from tests.support.http import PROVIDER, lesson
from tests.support.served import Api, served
from tests.support.stores import Store


@pytest.fixture
def api(store: Store) -> Iterator[Api]:
    with served(store.url) as running:
        yield running


def request(api: Api, slot: str, request_id: str, **changes: Any) -> Any:
    response = api.client.post(
        "/v1/lessons/requests",
        json=lesson(slot=slot, request_id=request_id, **changes),
        headers=api.auth("provider", PROVIDER),
    )
    assert response.status_code == 201, response.text
    return response.json()


def proven_history(api: Api, lesson_id: str) -> tuple[Checkpoint, list[EventProof]]:
    response = api.client.get(
        f"/v1/lessons/{lesson_id}/history",
        params={"proof": "true"},
        headers=api.auth("provider", PROVIDER),
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    proofs = [EventProof.from_json(entry["proof"]) for entry in answer["entries"]]
    return Checkpoint.from_json(answer["checkpoint"]), proofs


def public_key(api: Api) -> bytes:
    key: bytes = api.app.state.audit.signer.public_key
    return key


def test_a_lessons_history_comes_with_proofs_the_auditor_checks_alone(api: Api) -> None:
    admin = api.auth("admin")
    assert api.client.get("/v1/audit/checkpoint", headers=admin).status_code == 404
    first = request(api, "08:30-09:00", "r-1")
    turned_away = api.client.post(  # the same slot asked for again, otherwise: an event too
        "/v1/lessons/requests",
        json=lesson(
            slot="08:30-09:00",
            request_id="r-2",
            details={"students": [{"id": "st-2", "grade": 4}], "subject": "Art"},
        ),
        headers=api.auth("provider", PROVIDER),
    )
    assert turned_away.status_code == 409, turned_away.text
    for n in range(3):
        request(api, f"{10 + n}:00-{10 + n}:30", f"other-{n}")
    api.app.state.audit.catch_up()

    checkpoint, proofs = proven_history(api, first["lesson_id"])

    assert [p.version for p in proofs] == [1, 2]
    for proof in proofs:
        verify_event(public_key(api), checkpoint, proof)  # raises if it does not hold
    published = api.client.get("/v1/audit/checkpoint", headers=admin).json()
    assert Checkpoint.from_json(published) == checkpoint

    # Altered bytes: the event's state with one field changed.
    edited = proofs[0].state.replace(b'"request_id":"r-1"', b'"request_id":"r-9"')
    assert edited != proofs[0].state
    with pytest.raises(InvalidProof, match="is not leaf"):
        verify_event(public_key(api), checkpoint, replace(proofs[0], state=edited))
    # A wrong signature: the checkpoint's root claimed for another size.
    with pytest.raises(InvalidCheckpoint):
        verify_event(public_key(api), replace(checkpoint, size=checkpoint.size + 1), proofs[0])
    # A checkpoint signed by another key, with everything else right.
    other = Ed25519PrivateKey.generate()
    forged = replace(checkpoint, signature=other.sign(checkpoint.message()))
    with pytest.raises(InvalidCheckpoint, match="not signed by this key"):
        verify_event(public_key(api), forged, proofs[0])
    other_public = other.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    verify_event(other_public, forged, proofs[0])  # ... which that key's holder could show


def test_a_later_checkpoint_extends_an_earlier_one(api: Api) -> None:
    admin = api.auth("admin")
    for n in range(5):
        request(api, f"{8 + n}:00-{8 + n}:30", f"early-{n}")
    api.app.state.audit.catch_up()
    earlier = Checkpoint.from_json(api.app.state.audit.checkpoint().as_json())
    for n in range(7):
        request(api, f"{8 + n}:00-{8 + n}:30", f"late-{n}", lessonDate="2025-09-09")
    api.app.state.audit.catch_up()
    api.app.state.audit.checkpoint()

    answer = api.client.get(
        "/v1/audit/consistency", params={"from_size": earlier.size}, headers=admin
    ).json()
    later = Checkpoint.from_json(answer["checkpoint"])
    proof = [bytes.fromhex(node) for node in answer["proof"]]

    assert later.size == earlier.size + 7
    assert verify_consistency(earlier.size, earlier.root, later.size, later.root, proof)
    assert not verify_consistency(earlier.size, bytes(32), later.size, later.root, proof)
    too_far = api.client.get(
        "/v1/audit/consistency", params={"from_size": later.size + 1}, headers=admin
    )
    assert too_far.status_code == 422
    assert too_far.json()["errors"][0]["field"] == "from_size"


def test_an_export_with_proofs_is_checked_without_the_database(
    store: Store, api: Api, tmp_path: Path
) -> None:
    for n in range(4):
        request(api, f"{8 + n}:00-{8 + n}:30", f"r-{n}")
    exported, checkpoint = tmp_path / "audit.jsonl", tmp_path / "checkpoint.json"
    made = cli("export", "-o", str(exported), "--proofs", str(checkpoint), database_url=store.url)
    assert made.exit_code == 0, made.stderr
    key = base64.b64encode(public_key(api)).decode()
    offline = "sqlite:////nonexistent/folder/ledger.db"  # no database to be had

    def verify_export(path: Path) -> Any:
        return cli(
            "verify-export", str(path), "--checkpoint", str(checkpoint), "--public-key", key,
            database_url=offline,
        )  # fmt: skip

    good = verify_export(exported)
    assert good.exit_code == 0, good.stdout + good.stderr
    assert "4 lines up to position" in good.stdout and "matches its proofs" in good.stdout

    lines = exported.read_text().splitlines()
    edited = json.loads(lines[1])
    edited["actor"] = "mallory"  # the line no longer says what its proven bytes say
    forged = json.loads(lines[2])
    forged["proof"]["state"] = base64.b64encode(b'{"actor":"mallory"}').decode()
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([lines[0], json.dumps(edited), json.dumps(forged)]) + "\n")

    bad = verify_export(tampered)

    assert bad.exit_code == 1
    assert "line 2 " in bad.stdout and "differs from the proven event in actor" in bad.stdout
    assert "line 3 " in bad.stdout and "is not leaf" in bad.stdout
    # The ledger's own check ignores the proofs and still matches the untouched export.
    assert cli("verify-export", str(exported), database_url=store.url).exit_code == 0


def test_an_export_with_proofs_while_the_ledger_takes_requests_proves_every_line(
    store: Store, api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        request(api, f"{8 + n}:00-{8 + n}:30", f"r-{n}")
    sign = LedgerAudit.checkpoint

    def signed_then_more(audit: LedgerAudit) -> Checkpoint:
        made = sign(audit)
        request(api, "12:00-12:30", "r-later")  # a request just after it was signed...
        audit.catch_up()  # ...and taken by the tree, as the server's follower does
        return made

    monkeypatch.setattr(LedgerAudit, "checkpoint", signed_then_more)
    exported, checkpoint = tmp_path / "audit.jsonl", tmp_path / "checkpoint.json"
    made = cli("export", "-o", str(exported), "--proofs", str(checkpoint), database_url=store.url)
    assert made.exit_code == 0, made.stderr

    lines = [json.loads(line) for line in exported.read_text().splitlines()]
    assert len(lines) == 3 and all(line["proof"] is not None for line in lines)
    key = base64.b64encode(public_key(api)).decode()
    checked = cli(
        "verify-export", str(exported), "--checkpoint", str(checkpoint), "--public-key", key,
        database_url="sqlite:////nonexistent/folder/ledger.db",
    )  # fmt: skip
    assert checked.exit_code == 0, checked.stdout + checked.stderr
