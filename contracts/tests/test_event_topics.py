"""The event types by topic: each defined in exactly one topic module, all exported from
`agent_engine.contracts.events`, and the router-internal ones marked as docs/events.md says."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import agent_engine.contracts.events as events
from agent_engine.contracts.events import EVENT_TYPES, INTERNAL_TYPES, TOPICS, EventData
from agent_engine.contracts.events.tasks import TaskFinished

EVENTS_DOC = Path(__file__).parents[2] / "docs" / "events.md"

BASES = {TaskFinished}
"""Models that only lend their fields to event types (task.succeeded, task.failed) and are no type themselves."""

EXPORTED_BEFORE_THE_SPLIT = """
    ConversationSummary DispatchedAgent DispatchedTool EVENT_TYPES EventData Lineage LlmCallFailed LlmCallNote
    LlmCalled MemoryView ModelChoice NodeApprovalDecided NodeApprovalRefused NodeApprovalRequested NodeApproved
    NodeCompleted NodeContext NodeDeadlineExpired NodeDispatched NodeErrored NodeFailed NodeFannedOut NodeMerged
    NodeResultIgnored NodeRetryDue NodeRetryScheduled NodeRevisionRequested NodeSkipped NodeSucceeded
    NodeToolReturned NodeToolTurnRecorded NodeToolsRequested RequestedCall SubtaskFinished SubtaskRequested
    SubtaskSettled TaskAccepted TaskAdmitted TaskCancelRequested TaskCancelled TaskFailed TaskFinished
    TaskForkRequested TaskForked TaskQueued TaskRejected TaskRequested TaskStarted TaskStatus TaskSucceeded
    TenantAdmitted TenantQueued TenantReleased ToolCallRef ToolDef ToolStep ToolTurn Usage data_model_for parse_data
""".split()
"""What `agent_engine.contracts.events` offered when it was one module; code across the services imports these."""


def defined_in(module: object) -> list[type[EventData]]:
    return [v for v in vars(module).values()
            if isinstance(v, type) and issubclass(v, EventData) and v.__module__ == getattr(module, "__name__", "")]


def test_every_event_type_is_in_exactly_one_topic_module() -> None:
    listed = [cls for topic in TOPICS for cls in topic.EVENTS]
    assert [c.TYPE for c, n in Counter(listed).items() if n > 1] == []
    assert sorted(cls.TYPE for cls in listed) == sorted(EVENT_TYPES)
    for topic in TOPICS:
        for cls in topic.EVENTS:
            assert cls.__module__ == topic.__name__, f"{cls.TYPE} is listed by {topic.__name__}, defined elsewhere"
            assert EVENT_TYPES[cls.TYPE] is cls


def test_every_event_model_a_topic_module_defines_is_a_registered_type() -> None:
    for topic in TOPICS:
        unlisted = set(defined_in(topic)) - set(topic.EVENTS) - BASES
        assert not unlisted, f"{topic.__name__} defines {sorted(c.__name__ for c in unlisted)} but does not list them"
    assert all(base.TYPE not in EVENT_TYPES for base in BASES)


def test_the_package_exports_every_name_it_did_and_every_topic_model() -> None:
    assert set(EXPORTED_BEFORE_THE_SPLIT) <= set(events.__all__)
    for topic in TOPICS:
        public = {name for name, value in vars(topic).items()
                  if not name.startswith("_") and getattr(value, "__module__", None) == topic.__name__}
        assert public <= set(events.__all__), f"{topic.__name__}: export {sorted(public - set(events.__all__))}"
    for name in events.__all__:
        assert getattr(events, name) is not None


def test_internal_types_are_the_routers_own_inputs_and_admission_log() -> None:
    assert {
        "task.admitted", "subtask.requested", "subtask.finished",  # router to router, through the bus
        "node.deadline_expired", "node.retry_due",  # from the router's timers, never published
        "tenant.admitted", "tenant.queued", "tenant.released",  # a tenant's admission log
        "tenant.key_claimed",  # the index of a tenant's idempotency keys
    } == INTERNAL_TYPES
    assert not EventData.INTERNAL


def test_docs_list_every_type_and_mark_the_internal_ones() -> None:
    text = EVENTS_DOC.read_text()
    table = text[text.index("## Event types\n"):]
    table = table[:table.index("\n\n", table.index("| type |"))]
    header = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    assert header[-1] == "router-internal"
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\| \[`([a-z_.]+)`\]", line)
        if match:
            rows[match.group(1)] = line.rstrip().rstrip("|").rsplit("|", 1)[1].strip()
    assert sorted(rows) == sorted(EVENT_TYPES)
    assert {t for t, mark in rows.items() if mark == "yes"} == INTERNAL_TYPES
    assert {mark for t, mark in rows.items() if t not in INTERNAL_TYPES} == {""}
