"""The capacity planner: the published task-latency model (formulas), a
Monte-Carlo check of it on the simulator, and the interactive HTML page."""
