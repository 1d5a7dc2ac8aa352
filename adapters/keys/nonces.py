"""AES-GCM nonces: a random start per process, then counting up from it.

GCM asks one thing of a nonce: never twice under the same key (NIST SP 800-38D, 8). A
process draws a random 96-bit start once (again in a forked child) and counts from it, so
no nonce repeats within a process; two processes repeat one only if their ranges meet,
about P^2 * n / 2^96 for P processes of n nonces each, far below the chance of a repeat
among N nonces all drawn at random (about N^2 / 2^97). Drawing from OpenSSL for every
call cost a single request a third of what sealing cost it, in the request loop
(docs/decisions/0052-nonces-counted-from-a-random-start.md).
"""

from __future__ import annotations

import itertools
import os

from adapters.randomness import random_bytes

NONCE_BYTES = 12
_SPACE = 1 << (8 * NONCE_BYTES)


class Nonces:
    """Unique 96-bit nonces for this process: a random start, counted up from."""

    def __init__(self) -> None:
        self._counter = _started()
        # A forked child starts afresh (as the `random` module reseeds): counting on from
        # its parent's start would repeat the nonces the parent goes on to take.
        os.register_at_fork(after_in_child=self._restart)

    def take(self, count: int) -> list[bytes]:
        """`count` nonces never taken before, by this process or (beyond chance) another."""
        return [self.one() for _ in range(count)]

    def one(self) -> bytes:
        """One nonce never taken before."""
        return (next(self._counter) % _SPACE).to_bytes(NONCE_BYTES, "big")

    def _restart(self) -> None:
        self._counter = _started()


def _started() -> itertools.count[int]:
    return itertools.count(int.from_bytes(random_bytes(NONCE_BYTES), "big"))


NONCES = Nonces()
"""The process's nonces (itertools.count: one thread's `next` never interleaves another's)."""
