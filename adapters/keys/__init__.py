"""The ledger's own secret keys (adapters/keys/keyfile.py) and what is derived with them
(adapters/keys/keyed_ids.py)."""
