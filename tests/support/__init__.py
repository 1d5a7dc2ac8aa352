"""What the tests share and import: stores, servers, workloads, fakes, waiting helpers."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root (where `python -m adapters.cli` runs)."""

A_REQUEST = {
    "provider_id": "7f1c1a52-2b7e-4d57-9a7e-5f0e0c7d1e11",
    "school_id": "school-1",
    "lesson_date": "2025-09-08",
    "time_slot": "08:30-09:00",
    "request_id": "r-1",
    "actor": "speech-therapist",
}
"""A valid lesson request's fields besides its details (`validate_request(**A_REQUEST, ...)`)."""
