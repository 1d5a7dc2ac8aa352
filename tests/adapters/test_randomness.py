"""Random bytes on the request path (adapters/randomness.py): as many as asked, never the
same twice, and a forked process never draws what its parent draws (two server processes
forked from one must not make the same AES-GCM nonces)."""

from __future__ import annotations

import os
import uuid

import pytest

from adapters.randomness import random_bytes, random_uuid


def test_draws_are_as_long_as_asked_and_never_repeat() -> None:
    draws = [random_bytes(12) for _ in range(10_000)]
    assert {len(draw) for draw in draws} == {12}
    assert len(set(draws)) == len(draws)
    assert len(random_bytes(48)) == 48


def test_a_random_uuid_is_a_version_4_uuid() -> None:
    made = random_uuid()
    assert isinstance(made, uuid.UUID)
    assert made.version == 4 and made.variant == uuid.RFC_4122
    assert made != random_uuid()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_processes_draw_apart_from_their_parent_and_each_other() -> None:
    random_bytes(16)  # the parent's generator in use before the fork
    children: list[bytes] = []
    for _ in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next draw, to the parent, then out at once
            os.write(write, random_bytes(16))
            os._exit(0)
        os.close(write)
        children.append(os.read(read, 16))
        os.close(read)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    parent = random_bytes(16)
    assert len(set([*children, parent])) == 3
    assert all(len(child) == 16 for child in children)
