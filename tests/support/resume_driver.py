"""A driver process for the resume test: attaches to replicas the test process runs on
its Ray cluster and runs one task of ``marking_agent`` until the test kills it (the
cluster, like a production one, outlives its drivers).

    python tests/support/resume_driver.py RAY_ADDRESS ACTOR_NAME JOURNAL COUNTER TASK_ID
"""

from __future__ import annotations

import asyncio
import os
import sys

from agent_tools import COUNTER_ENV, marking_agent

from executor import Executor
from executor.fleet.pool import ReplicaPool


async def main(address: str, actor: str, journal: str, task_id: str) -> None:
    pool = await asyncio.to_thread(ReplicaPool.attach, address, [actor])
    async with Executor("tiny", pool=pool, journal=journal) as ex:
        await ex.run(marking_agent(), "Mark the records.", task_id=task_id)


if __name__ == "__main__":
    address, actor, journal, counter, task_id = sys.argv[1:6]
    os.environ[COUNTER_ENV] = counter
    asyncio.run(main(address, actor, journal, task_id))
