"""What end-to-end tests (tests/) and benchmarks (bench/) share: a client of a running engine."""

from agent_engine.testkit.client import TERMINAL, EngineClient, task_request

__all__ = ["TERMINAL", "EngineClient", "task_request"]
