"""The fleet: Ray actors hosting SGLang engines (:mod:`.actor`), typed handles to
them, their configuration, the pool that starts them on a Ray cluster, the
registry of live replicas an executor serves on, health probes and operator
commands. Plumbing only: the orchestration over their lifetime (death, healing,
drain) is :mod:`executor.fleet_lifetime`."""
