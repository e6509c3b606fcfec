"""Guardrails: the ingress gate; every request leaves as task.accepted or task.rejected with a reason."""
