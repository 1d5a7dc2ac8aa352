"""AES-GCM nonces (adapters/keys/nonces.py): never the same twice, from one thread or
many, and a forked child never takes what its parent goes on to take (two server
processes forked from one would otherwise seal under the same nonces)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from adapters.keys.nonces import NONCE_BYTES, NONCES
from tests.support import ROOT
from tests.support.together import in_threads_together


def test_nonces_are_twelve_bytes_and_never_repeat() -> None:
    taken = [nonce for _ in range(20_000) for nonce in NONCES.take(5)]
    assert {len(nonce) for nonce in taken} == {NONCE_BYTES}
    assert len(set(taken)) == len(taken) == 100_000


def test_separate_processes_start_far_apart() -> None:
    # Each process starts at a random point of the 2^96 values, not at a shared one.
    firsts = [_first_nonce_of_a_new_process() for _ in range(4)]
    assert len({first[:6] for first in firsts}) == 4


def test_threads_taking_at_once_never_get_the_same_nonce() -> None:
    taken = in_threads_together(lambda _: [n for _ in range(2_000) for n in NONCES.take(3)], 8)
    every = [nonce for one_thread in taken for nonce in one_thread]
    assert len(set(every)) == len(every) == 8 * 6_000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_never_takes_its_parents_nonces() -> None:
    NONCES.take(1)  # the parent's count under way before the fork
    children: list[bytes] = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next thousand nonces, to the parent, then out at once
            os.write(write, b"".join(NONCES.take(1_000)))
            os._exit(0)
        os.close(write)
        children += _nonces_read(read, 1_000)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    parent = NONCES.take(3_000)
    assert len(set(children)) == 2_000
    assert not set(children) & set(parent)


def _nonces_read(read: int, count: int) -> list[bytes]:
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    assert len(data) == count * NONCE_BYTES
    return [data[at : at + NONCE_BYTES] for at in range(0, len(data), NONCE_BYTES)]


def _first_nonce_of_a_new_process() -> bytes:
    code = "from adapters.keys.nonces import NONCES; print(NONCES.take(1)[0].hex())"
    ran = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return bytes.fromhex(ran.stdout.strip())
