"""The executor as a service: one long-lived Executor (one scheduler core for the
fleet) behind an HTTP API (``python -m executor serve``); see README, "Run it as a
service"."""

from executor.service.app import create_app
from executor.service.server import ServiceOptions, build_service, serve
from executor.service.tasks import TaskService

__all__ = ["ServiceOptions", "TaskService", "build_service", "create_app", "serve"]
