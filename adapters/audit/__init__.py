"""The tamper-evident log's outside: the checkpoint signing key, and the tree opened on the
ledger's database."""
