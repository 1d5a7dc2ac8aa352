"""What the tests share and import: stores, servers, workloads, fakes, waiting helpers."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root (where `python -m adapters.cli` runs)."""
