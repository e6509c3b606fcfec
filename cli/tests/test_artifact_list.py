"""`agentctl artifact list --task`: the references in a task's stored history, once each, with the node
that produced them, whether the router recorded them in its own event or in the record of an input."""

from __future__ import annotations

from agent_engine.cli.commands.artifacts import listed
from agent_engine.contracts.artifacts import TEXT, ArtifactRef, artifact_id, dispatch_object

ONE = ArtifactRef(artifact=artifact_id(b"1"), size=1, media_type=TEXT, name="read.content").model_dump()
FILE = ArtifactRef(artifact=artifact_id(b"f"), size=1, media_type=TEXT, name="notes/a.md").model_dump()


def test_each_reference_is_listed_once_with_the_node_that_produced_it() -> None:
    events = [
        {"type": "task.started", "data": {"workflow": "w"}},
        {"type": "router.input", "data": {"input": {"type": "node.completed", "data": {
            "node": "read", "output": {"content": ONE}, "files": [FILE]}}}},
        {"type": "node.succeeded", "data": {"node": "read", "output": {"content": ONE}}},
        {"type": "node.dispatched", "data": {"node": "summarise", "context": {"upstream": {"read": {"content": ONE}}}}},
    ]
    assert [(r["artifact"], r["node"], r["name"], r["event"]) for r in listed(events)] == [
        (ONE["artifact"], "read", "read.content", "router.input"),
        (FILE["artifact"], "read", "notes/a.md", "router.input"),
    ]


def test_a_task_without_references_lists_none() -> None:
    assert listed([{"type": "node.succeeded", "data": {"node": "n", "output": {"text": "small"}}}]) == []


def test_a_dispatchs_own_copy_is_listed_with_the_longer_id_artifact_get_takes() -> None:
    """An output the output gate checked is its dispatch's own copy: listed apart from equal shared content,
    under the locator that finds its object."""
    copy = {**ONE, "object": dispatch_object(artifact_id(b"1"), "d-1")}
    events = [{"type": "node.succeeded", "data": {"node": "read", "output": {"content": ONE}}},
              {"type": "node.succeeded", "data": {"node": "check", "output": {"content": copy}}}]
    assert [(r["locator"], r["artifact"], r["node"]) for r in listed(events)] == [
        (ONE["artifact"], ONE["artifact"], "read"),
        ("sha256:" + copy["object"], ONE["artifact"], "check"),
    ]
