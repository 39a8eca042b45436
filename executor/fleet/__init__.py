"""The fleet: Ray actors hosting SGLang engines (:mod:`.actor`), typed handles to
them, their configuration, the pool that starts them on a Ray cluster, the
registry of live replicas an executor serves on, and their lifetime (health
checks, death, healing, drain, operator commands)."""
