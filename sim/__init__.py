"""Discrete-event fleet simulator: an engine latency model, a seeded workload,
and a loop that drives the scheduler core (or a baseline router) with events."""
