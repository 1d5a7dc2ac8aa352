"""The tamper-evident log: a Merkle tree over every stored event (RFC 6962), kept as a
projection, its signed checkpoints, and the proofs an auditor checks without the database."""
