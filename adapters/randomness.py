"""Random bytes for ids on the request path, and where nonces start, without letting go of
the GIL.

`os.urandom` (and `uuid.uuid4`, `secrets`) release the GIL for their system call. With
other threads busy, a server's command threads or its event loop, the caller then waits
out another thread's switch interval, milliseconds, before it runs again: the write
benchmark's 8 threads lost about a tenth of their rate to one such call a request
(docs/decisions/0051-random-bytes-holding-the-gil.md). OpenSSL's generator, seeded by
the system and reseeded in a forked child, answers in a microsecond holding the GIL.
Keys and tokens, made rarely, still come from `os.urandom` and `secrets`.
"""

from __future__ import annotations

import ssl
import uuid


def random_bytes(count: int) -> bytes:
    """`count` cryptographically strong random bytes (where a process's nonces start, say)."""
    return ssl.RAND_bytes(count)


def random_uuid() -> uuid.UUID:
    """A random (version 4) UUID, as `uuid.uuid4()` makes one."""
    return uuid.UUID(bytes=ssl.RAND_bytes(16), version=4)
