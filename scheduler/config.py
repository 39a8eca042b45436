"""Knobs of the scheduler core. Policies take the values they need from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    # admission
    kv_headroom: float = 0.05
    """Fraction of each replica's KV capacity never reserved (growth beyond the
    expected peak, the shared system prompt, fragmentation)."""
    admission_queue_limit: int = 10_000
    """New tasks waiting for admission beyond this are rejected."""
    reservation: str = "usage"
    """What a resident task holds against its replica: ``usage`` (v2: its history,
    or its first prompt, plus the growth expected to its next call) or ``peak``
    (v1: its expected peak history for its whole life)."""
    growth_quantile: float = 0.1
    """Usage reservation: the quantile of an agent's per-step growth it expects. Low:
    growth beyond it pauses the cheapest tool-waiting task (``pause_order``), while a
    high one holds every resident task's allowance idle; in the 16-replica KV-bound
    simulation (with cheapest pauses) the knee went from 2.53 tasks/s at 0.9 to 2.65
    at 0.1 (2.59 at 0.5, 2.67 at 0.01)."""
    growth_prior_tokens: int = 1024
    """Usage reservation: the growth expected before an agent has 8 steps observed."""
    # pausing under pressure
    max_pauses: int | None = 3
    """KV releases under pressure one task may take; then it keeps its KV (None: no
    limit). Anti-thrash, with the low water below."""
    pause_order: str = "cheapest"
    """Which tool-waiting tasks a call's growth over the budget pauses: ``cheapest``
    (the smallest histories first, those expected back before their re-prefill could
    be done last) or ``latest`` (the one expected back last first, as before).
    Cheapest: the 16-replica KV-bound simulation's knee 2.44 -> 2.53 tasks/s."""
    pause_low_water: float = 1.0
    """When growth pushes a replica over its budget, tool-waiting tasks are paused
    until its reservations are back under this fraction of the budget."""
    # compute
    max_running_calls: int = 8
    """Concurrent calls per replica (a replica may override it when it joins)."""
    # ordering
    slo_s: float = 60.0
    """Default task deadline: arrival + slo_s (EDF ordering)."""
    starvation_s: float = 30.0
    """A call ready for longer than this runs before any other on its replica."""
    # KV retention across tool waits
    prefill_tokens_per_s: float = 11_300.0
    """Prefill rate used to price a re-prefill (the cost of releasing KV)."""
    retention_ratio: float = 8.0
    """Under pressure, release a waiting task's KV when its expected tool wait
    exceeds retention_ratio x the time to re-prefill its history."""
    waiting_kv_cap: float = 0.9
    """Under pressure, at most this fraction of a replica's KV budget is held by
    tool-waiting tasks."""
    default_tool_s: float = 1.0
    """Expected tool duration before a tool has been observed."""
    tool_ewma_alpha: float = 0.2
    # work-conserving admission (learned from the run)
    work_conserving: bool = True
    """A task waiting for KV room is placed on a replica with a free compute slot by
    releasing tool-waiting tasks' KV there (within ``max_pauses``): at once when
    their re-prefill (at the learned prefill speed) costs less than the head's
    expected queue wait (at the learned drain rate) and each of them is expected back
    no sooner; otherwise once the head has waited as long as that re-prefill (rent
    or buy). Open loop, 2 replicas, 2,090-2,550 tasks/h (docs/benchmarks-e2e.md):
    with rent or buy the queued share went 14-19% -> 9-12% and p95 from +24-32% over
    the sticky router's to within a few percent of it."""
    learn_prefill_speed: bool = False
    """Retention prices re-prefills at the speed the finished calls show (a
    least-squares fit of latency on prefilled and output tokens; work-conserving
    admission always does) instead of ``prefill_tokens_per_s``. Off: in the 16-replica
    KV-bound simulation the learned speed (batched calls: ~4.9K tokens/s against the
    engine's 11.3K alone) kept more KV through tools and p95 at 2.6 tasks/s went from
    406 s to 424 s."""
    # warm before return
    warm_up: bool = True
    """A task whose KV was released re-prefills its history on a replica with KV room
    and idle compute shortly before its tool is expected to end (``WarmUp``), when no
    task waits for admission; the room is given back if one comes to wait first. On: in
    the 16-replica KV-bound simulation (8 s tools; docs/benchmarks.md) it took 39-65% of
    the re-prefilled tokens off the calls' critical path at 2.6 tasks/s and p95 from
    214/243 s to 200/223 s (seeds 0/1); at 2.8, p95 -5%/-0.2% and tasks/hour +2.4%/+2.5%;
    without KV pressure it does nothing."""
    warm_up_lead: float = 2.0
    """A warm-up starts once the task's tool is expected to end within this many times
    its re-prefill's time (at the learned prefill speed)."""
    warm_up_slots: int = 1
    """Warm-ups in flight per replica; a replica takes one only while its running calls
    and warm-ups are under its ``max_running_calls`` and no call of its waits."""
    warm_up_max_running: int = 0
    """...and while it runs at most this many calls (0: idle replicas only; in the
    16-replica KV-bound simulation at 2.6 tasks/s, seed 1, this feature's first version
    with any free slot (8) made p95 worse, 243 -> 281 s, where idle-only made it better,
    243 -> 220 s: a warm-up's prefill slows the decode steps of the calls beside it)."""
    drain_window_s: float = 120.0
    """Time constant of the admission queue's learned drain rate."""
    # shedding
    shed_slo_s: float | None = None
    """Opt-in SLO-aware shedding: a task whose predicted admission wait (its place in
    line over the learned drain rate) already exceeds this is rejected at arrival, with
    a retry-after. None: off (every task is queued up to ``admission_queue_limit``).
    Separate from ``slo_s``, which only sets EDF deadlines."""
    stats_ended_tasks: int = 100_000
    """Ended tasks whose grant waits ``SchedulerCore.stats()`` keeps (the latest)."""
    # failure handling
    max_migrations: int = 3
    """Re-placements after replica deaths a task survives; one more fails it."""
    max_call_retries: int = 2
    """CallFailed retries on the same replica; one more fails the task."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.kv_headroom < 1.0:
            raise ValueError("kv_headroom must be in [0, 1)")
        if self.max_running_calls < 1:
            raise ValueError("max_running_calls must be >= 1")
        if self.admission_queue_limit < 0:
            raise ValueError("admission_queue_limit must be >= 0")
        if not 0.0 < self.waiting_kv_cap <= 1.0:
            raise ValueError("waiting_kv_cap must be in (0, 1]")
        if self.prefill_tokens_per_s <= 0:
            raise ValueError("prefill_tokens_per_s must be > 0")
        if not 0.0 < self.tool_ewma_alpha <= 1.0:
            raise ValueError("tool_ewma_alpha must be in (0, 1]")
        if self.reservation not in ("usage", "peak"):
            raise ValueError("reservation must be 'usage' or 'peak'")
        if not 0.0 < self.growth_quantile <= 1.0 or self.growth_prior_tokens < 0:
            raise ValueError("need 0 < growth_quantile <= 1 and growth_prior_tokens >= 0")
        if self.pause_order not in ("cheapest", "latest"):
            raise ValueError("pause_order must be 'cheapest' or 'latest'")
        if not 0.0 < self.pause_low_water <= 1.0:
            raise ValueError("pause_low_water must be in (0, 1]")
        if self.max_pauses is not None and self.max_pauses < 0:
            raise ValueError("max_pauses must be >= 0 (or None)")
        if self.drain_window_s <= 0 or self.stats_ended_tasks < 0:
            raise ValueError("drain_window_s must be > 0 and stats_ended_tasks >= 0")
        if self.shed_slo_s is not None and self.shed_slo_s <= 0:
            raise ValueError("shed_slo_s must be > 0 (or None: off)")
        if self.warm_up_lead < 0 or self.warm_up_slots < 1 or self.warm_up_max_running < 0:
            raise ValueError(
                "need warm_up_lead >= 0, warm_up_slots >= 1 and warm_up_max_running >= 0"
            )
        if self.max_migrations < 0 or self.max_call_retries < 0:
            raise ValueError("max_migrations and max_call_retries must be >= 0")


def v1(config: SchedulerConfig | None = None) -> SchedulerConfig:
    """The v1 admission (peak reservations, no pause limit, no low water) on top of
    ``config``: the baseline v2 is measured against."""
    from dataclasses import replace

    return replace(
        config or SchedulerConfig(), reservation="peak", max_pauses=None, pause_low_water=1.0
    )
