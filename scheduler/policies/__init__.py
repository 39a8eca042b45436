"""Pluggable policies of the scheduler core, one per file, each behind a small
Protocol: admission, placement, ordering, KV retention, failover."""

from scheduler.policies.admission import AdmissionPolicy, KVBudgetAdmission, UsageAdmission
from scheduler.policies.failover import FailoverPolicy, MigrationLimitedFailover
from scheduler.policies.ordering import (
    EarliestDeadlineFirst,
    LeastAttainedService,
    OrderingPolicy,
    ordering_by_name,
)
from scheduler.policies.placement import PlacementPolicy, SpreadPlacement
from scheduler.policies.retention import CostAwareRetention, RetentionPolicy

__all__ = [
    "AdmissionPolicy",
    "KVBudgetAdmission",
    "UsageAdmission",
    "FailoverPolicy",
    "MigrationLimitedFailover",
    "OrderingPolicy",
    "LeastAttainedService",
    "EarliestDeadlineFirst",
    "ordering_by_name",
    "PlacementPolicy",
    "SpreadPlacement",
    "RetentionPolicy",
    "CostAwareRetention",
]
