"""Baseline routers the simulator compares the core with. They speak the core's
interface (``handle(event) -> list[Decision]``) but admit everything at once and
send every call straight to an engine, which queues and evicts on its own."""

from scheduler.baselines.cache_aware import CacheAwareRouter
from scheduler.baselines.round_robin import RoundRobinRouter

__all__ = ["CacheAwareRouter", "RoundRobinRouter"]
