"""LinkTurns: settlements share the receiver link, receive calls and renewals have it alone, nobody starves."""

from __future__ import annotations

import asyncio

from digest_worker.link import LinkTurns


async def test_settlements_share_the_link_and_receive_waits_for_them() -> None:
    turns, order = LinkTurns(), []
    release = asyncio.Event()

    async def settle(name: str) -> None:
        async with turns.shared():
            order.append(f"{name} in")
            await release.wait()
            order.append(f"{name} out")

    async def receive() -> None:
        async with turns.exclusive():
            order.append("receive")

    settles = [asyncio.create_task(settle(n)) for n in ("s1", "s2")]
    await asyncio.sleep(0)
    rec = asyncio.create_task(receive())
    await asyncio.sleep(0)
    assert order == ["s1 in", "s2 in"] and turns.busy  # both settlements at once; the receive call waits
    release.set()
    await asyncio.gather(*settles, rec)
    assert order[-1] == "receive" and not turns.busy


async def test_waiting_settlements_and_renewals_go_before_the_next_receive_call() -> None:
    turns, order = LinkTurns(), []

    async def receive_loop(rounds: int) -> None:  # like the consumer: re-enters at once after each call
        for i in range(rounds):
            async with turns.exclusive():
                order.append(f"receive {i}")
                await asyncio.sleep(0.01)

    async def settle() -> None:
        async with turns.shared():
            order.append("settle")

    async def renew() -> None:
        async with turns.exclusive(urgent=True):
            order.append("renew")

    loop = asyncio.create_task(receive_loop(3))
    await asyncio.sleep(0.001)  # receive 0 in progress
    waiting = [asyncio.create_task(settle()), asyncio.create_task(renew())]
    await asyncio.gather(loop, *waiting)
    assert order[0] == "receive 0"
    assert set(order[1:3]) == {"renew", "settle"}  # both before receive 1
    assert order[3:] == ["receive 1", "receive 2"]


async def test_settlements_arriving_while_a_receive_call_waits_go_after_it() -> None:
    """Phase-fair: a steady stream of settlements cannot starve the receive call (the backlog would run dry)."""
    turns, order = LinkTurns(), []
    release = asyncio.Event()

    async def settle(name: str, hold: bool = False) -> None:
        async with turns.shared():
            order.append(f"{name} in")
            if hold:
                await release.wait()

    async def receive() -> None:
        async with turns.exclusive():
            order.append("receive")

    first = asyncio.create_task(settle("s1", hold=True))
    await asyncio.sleep(0)
    rec = asyncio.create_task(receive())
    await asyncio.sleep(0)
    late = [asyncio.create_task(settle(f"s{i}")) for i in (2, 3)]
    await asyncio.sleep(0)
    assert order == ["s1 in"]  # s2 and s3 queue behind the waiting receive call
    release.set()
    await asyncio.gather(first, rec, *late)
    assert order == ["s1 in", "receive", "s2 in", "s3 in"]


async def test_renewals_go_first_in_their_own_order() -> None:
    turns, order = LinkTurns(), []
    release = asyncio.Event()

    async def receive(name: str, hold: bool = False) -> None:
        async with turns.exclusive():
            order.append(name)
            if hold:
                await release.wait()

    async def renew(name: str) -> None:
        async with turns.exclusive(urgent=True):
            order.append(name)

    holder = asyncio.create_task(receive("receive 0", hold=True))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(receive("receive 1"))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(renew(f"renew {i}")) for i in range(3)]
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(holder, *tasks)
    assert order == ["receive 0", "renew 0", "renew 1", "renew 2", "receive 1"]


async def test_a_cancelled_waiter_leaves_the_link_free() -> None:
    turns = LinkTurns()
    async with turns.exclusive():
        waiter = asyncio.create_task(turns.shared().__aenter__())
        urgent = asyncio.create_task(turns.exclusive(urgent=True).__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        urgent.cancel()
        await asyncio.gather(waiter, urgent, return_exceptions=True)
    async with asyncio.timeout(1), turns.exclusive():  # nobody left waiting: the receive call goes ahead
        assert turns.busy
    assert not turns.busy
