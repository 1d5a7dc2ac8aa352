"""The ledger's own secret keys (keyfile.py) and what they protect or derive: data keys
per student and lesson date, kept wrapped in the database (data_keys.py), the sealing of
students' details and lessons' content with them (sealing.py), and ids derived from
clients' idempotency keys (keyed_ids.py)."""
