"""What can go wrong talking to the engine, each as one readable message."""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error this client raises."""


class ConnectError(ClientError):
    """The NATS server could not be reached, or refused the credential."""


class Unavailable(ClientError):
    """No service answered: the engine (or the service a query is for) is not running."""


class ClientTimeout(ClientError):
    """No answer or no news within the time given."""


class QueryError(ClientError):
    """A service answered a query with an error, e.g. `no task '<id>' in the router's store for tenant 'acme'`."""


class RequestRejected(ClientError):
    """The engine will not run the request (`task.rejected`): guardrails refused it, or the router did."""

    def __init__(self, task_id: str, stage: str, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"task {task_id} rejected by {stage}: {reason}")
        self.task_id = task_id
        self.stage = stage
        self.reason = reason
        self.retry_after_s = retry_after_s
        """Set when a rate limit refused the request: the same request may be sent again after this long."""
