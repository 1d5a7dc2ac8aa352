"""The call gate: slots granted by priority, then admission, to attempts still on their
way to the gate as well as those waiting at it."""

from __future__ import annotations

import asyncio

from projections.generation.gate import CallGate
from projections.generation.jobs import BULK, INTERACTIVE


def test_a_freed_slot_goes_to_interactive_first_even_if_it_arrives_last() -> None:
    async def scenario() -> list[str]:
        gate = CallGate(1)
        order: list[str] = []
        first = gate.admit(BULK)
        await gate.enter(first)  # holds the one slot
        bulk = [gate.admit(BULK) for _ in range(3)]
        teacher = gate.admit(INTERACTIVE)  # admitted last, still checking its slot

        async def call(name: str, ticket: tuple[int, int], delay: float) -> None:
            await asyncio.sleep(delay)
            await gate.enter(ticket)
            order.append(name)
            gate.done(ticket)

        tasks = [asyncio.create_task(call(f"bulk-{n}", t, 0)) for n, t in enumerate(bulk)]
        tasks.append(asyncio.create_task(call("teacher", teacher, 0.05)))
        await asyncio.sleep(0.01)  # the bulk ones wait at the gate; the teacher is not there
        gate.done(first)
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["teacher", "bulk-0", "bulk-1", "bulk-2"]


def test_an_attempt_that_will_not_call_gives_up_its_place_and_slots_are_bounded() -> None:
    async def scenario() -> tuple[int, list[str]]:
        gate = CallGate(2)
        skipped = gate.admit(INTERACTIVE)  # e.g. found already generated: never calls
        others = [gate.admit(BULK) for _ in range(4)]
        inside, most, done = 0, 0, []

        async def call(n: int) -> None:
            nonlocal inside, most
            await gate.enter(others[n])
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1
            done.append(f"bulk-{n}")
            gate.done(others[n])

        tasks = [asyncio.create_task(call(n)) for n in range(4)]
        await asyncio.sleep(0.01)
        gate.done(skipped)
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return most, done

    most, done = asyncio.run(scenario())
    assert most == 2 and sorted(done) == [f"bulk-{n}" for n in range(4)]
