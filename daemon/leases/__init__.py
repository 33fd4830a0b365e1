"""Leases: the lease record (model), the taking policy (policy) and the DynamoDB table (store)."""

from daemon.leases.model import Lease, lease_from_item, lease_to_item

__all__ = ["Lease", "lease_from_item", "lease_to_item"]
