"""Structured-output repair, offline: the mock scripts an invalid reply; the model gets the problem back."""

from __future__ import annotations

from agent_engine.agent_runner.providers import Gateway
from agent_engine.agent_runner.service import AgentRunner
from agent_engine.contracts.envelope import derive_id

GOOD = {"goal": "compare", "constraints": ["short"]}


async def test_an_invalid_reply_is_repaired_and_each_call_is_recorded(agent_dispatch) -> None:
    cause, dispatch = agent_dispatch(mock_responses=[{"$mock_invalid": "Happy to help! The goal is clear."},
                                                     {"goal": "compare"}, GOOD])
    events = await AgentRunner(Gateway()).handle(cause, dispatch)

    assert [(e.type, e.data.get("repair"), e.data.get("outcome")) for e in events] == [
        ("llm.called", 0, "invalid"), ("llm.called", 1, "invalid"), ("llm.called", 2, "valid"),
        ("node.completed", None, None)]
    assert events[0].data["problem"].startswith("model reply is not a JSON object")
    assert events[1].data["problem"] == ("output does not match the node's schema: (root): 'constraints' is a "
                                         "required property")
    assert "problem" not in events[2].data
    assert [e.id for e in events] == [derive_id(cause.id, s) for s in ("llm", "llm/1", "llm/2", "completed")]
    assert events[3].data["output"] == GOOD
    assert events[3].data["attempt"] == 1
    total_in = sum(e.data["usage"]["input_tokens"] for e in events[:3])
    assert events[3].data["usage"]["input_tokens"] == total_in  # the node's usage covers every call
    assert events[1].data["usage"]["input_tokens"] > events[0].data["usage"]["input_tokens"]  # longer conversation


async def test_still_invalid_after_max_repairs_is_a_retryable_error_with_the_last_problem(agent_dispatch) -> None:
    cause, dispatch = agent_dispatch(mock_responses=[{"$mock_invalid": "no"}, {"goal": 3, "constraints": []}],
                                     max_repairs=1)
    events = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert [e.type for e in events] == ["llm.called", "llm.called", "node.errored"]
    assert events[2].data["retryable"] is True
    assert events[2].data["error"] == ("output does not match the node's schema: goal: 3 is not of type 'string' "
                                       "(after 1 repair)")


async def test_the_next_attempt_continues_the_script_after_its_attempt_number(agent_dispatch) -> None:
    # call number = attempt + repair: attempt 2 starts at item 2
    cause, dispatch = agent_dispatch(attempt=2, mock_responses=[{"$mock_invalid": "x"}, GOOD])
    events = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert [e.type for e in events] == ["llm.called", "node.completed"]


async def test_without_repairs_the_first_invalid_reply_errors(agent_dispatch) -> None:
    cause, dispatch = agent_dispatch(mock_responses=[{"$mock_invalid": "```json\n{oops}\n```"}, GOOD], max_repairs=0)
    llm, err = await AgentRunner(Gateway()).handle(cause, dispatch)
    assert (llm.data["outcome"], llm.data["provider"]) == ("invalid", "mock")
    assert err.data["error"].startswith("model reply is not a JSON object")
