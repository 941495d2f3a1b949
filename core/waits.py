"""Waiting with a deadline in a way a stopping daemon can rely on.

Python 3.11's `asyncio.wait_for` loses a cancellation that arrives in the same loop iteration as the awaited
thing completes (the scan loop is woken by every poll, so under load this happens): the task goes on as if
nothing had been asked and the daemon's stop waits for it forever. `asyncio.timeout` counts cancellations
and does not lose one, so every timed wait of the daemon goes through here or through `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` seconds have passed; True if it was set."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def end_tasks(tasks: Iterable[asyncio.Task], log: logging.Logger, grace: float = 1.0,
                    tries: int = 5) -> None:
    """Cancel `tasks` and wait until they have ended. One still running after `grace` seconds is named in
    the log and cancelled again, up to `tries` times: a stop must end even when some library swallows a
    cancellation; after that it goes on without the task rather than hang until systemd kills it."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    for attempt in range(tries):
        for task in pending:
            task.cancel()
        if not pending:
            break
        _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            log.warning("task %s still running %.0f s after it was cancelled (%d of %d)", task.get_name(),
                        grace * (attempt + 1), attempt + 1, tries)
    if pending:
        log.error("stopping without %s: it does not end when cancelled",
                  ", ".join(sorted(task.get_name() for task in pending)))
    await asyncio.gather(*(task for task in tasks if task not in pending), return_exceptions=True)
