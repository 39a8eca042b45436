"""Baseline routers and schedulers the simulator compares the core with. They speak
the core's interface (``handle(event) -> list[Decision]``; Continuum adds
``PinKV``). The routers (cache_aware, round_robin, sticky) admit everything at
once and send every call straight to an engine, which queues and evicts on its
own; thunderagent admits programs by their tokens and pauses them; continuum
pins KV across short tools."""

from scheduler.baselines.cache_aware import CacheAwareRouter
from scheduler.baselines.continuum import ContinuumScheduler, PinKV
from scheduler.baselines.round_robin import RoundRobinRouter
from scheduler.baselines.sticky import StickyRouter
from scheduler.baselines.thunderagent import ThunderAgentScheduler

__all__ = [
    "CacheAwareRouter",
    "ContinuumScheduler",
    "PinKV",
    "RoundRobinRouter",
    "StickyRouter",
    "ThunderAgentScheduler",
]
