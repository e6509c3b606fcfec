"""Agent Engine contracts: the envelope, every event type, the subject map and workflow manifests.

Depends on pydantic only, so any system can import it to publish or read events.
"""

from agent_engine.contracts.envelope import CONTRACT_VERSION, Envelope
from agent_engine.contracts.events import EVENT_TYPES, EventData, data_model_for, parse_data
from agent_engine.contracts.subjects import subject_for

__all__ = [
    "CONTRACT_VERSION",
    "EVENT_TYPES",
    "Envelope",
    "EventData",
    "data_model_for",
    "parse_data",
    "subject_for",
]
