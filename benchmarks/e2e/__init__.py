"""End-to-end benchmark v2: the product path against the peers users deploy, over a
load sweep.

The same seeded agent tasks (scenario ``default``: 10-30 calls, growing prompts;
``heavy_tail``: shaped like agent traces, :mod:`benchmarks.e2e.workload`) run
closed-loop, ``--concurrency`` tasks at a time, with a real tool run in a
bubblewrap sandbox between calls, through:

- ``ours``: the product: the public ``Executor`` (journal, telemetry, health
  checks, per-task sandbox, the task loop; :mod:`benchmarks.e2e.product`);
- ``ours_v1``: the same with admission v1 (``scheduler.config.v1``);
- ``ours_release``: the same with release in the engine (each task an SGLang
  session, closed when the core releases its KV; replicas of their own);
- ``ours_core``: the scheduler core alone over the Dispatcher (no executor);
- ``round_robin``: each call to the next replica (same Ray replicas);
- ``sticky_router``: SGLang's router, ``--policy manual --assignment-mode
  min_load``, ``x-smg-routing-key`` = the task id, over SGLang HTTP servers;
- ``sglang_router``: SGLang's router, ``cache_aware``, over the same servers;
- ``no_cache``: the core on replicas with the radix cache disabled;
- ``gateway`` / ``gateway_keyless`` / ``gateway_rendered``: the service's
  ``/v1/chat/completions`` on the same Ray replicas through the official ``openai``
  client, the task's transcript as messages, one ``X-Session-ID`` per task / no
  identity at all / keyed with ``X-Exact-Reuse: off`` (every prompt re-rendered).

``ours``, ``sticky_router`` and ``round_robin`` run at every load, the others at
the middle one (those named with ``--contestants``: at every load). Every
contestant replays the executor's journal of ``ours`` (its prompts' token ids,
its replies' lengths) with the plan's tool gaps.
Reported per contestant and load: task p50/p95/p99, tasks/hour, call latency by
turn index, prefill and re-prefilled tokens, cache hit ratio, tasks rejected,
the replica of every call, KV occupancy per replica over time; PNGs: CDF,
timeline, KV; the simulator's calibration per contestant.

    python -m benchmarks.e2e --json out/e2e.json
"""

CONTESTANTS = (
    "ours",
    "ours_v1",
    "ours_release",
    "ours_core",
    "sticky_router",
    "sglang_router",
    "round_robin",
    "no_cache",
    "gateway",
    "gateway_keyless",
    "gateway_rendered",
)
#: the contestants run at every load of the sweep
EVERY_LOAD = ("ours", "sticky_router", "round_robin")
#: the contestants of the open loop's rate sweep (``--open-loop``): a new one (the
#: gateway) is one entry here and in CONTESTANTS, and its phase in :mod:`.run`
OPEN_LOOP = ("ours", "sticky_router", "round_robin")
#: the contestants that can run the open loop (``--open-loop --contestants`` picks
#: among them): the default three and the gateway's two (their phase drives either loop)
OPEN_CAPABLE = (*OPEN_LOOP, "gateway", "gateway_keyless", "gateway_rendered")
