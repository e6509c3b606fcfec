"""Building a dispatch: what running a node's current step sends to a runner, as a value.

A dispatch carries everything a stateless runner needs: the task input and the upstream outputs the
node's `sees` profile lets it see, and either the agent's configuration (model chosen by its tier
rules, prompts, output schema, tools, the conversation of earlier tool turns) or the tool call with
its arguments resolved. Building one may instead find that the node cannot run (its context is too
large or over its token budget, an argument refers to nothing), that it needs an approval first, or,
in a fork, that the source recorded the agent's answer already. The caller (walk.dispatch) records
what was built. Also here: the derived dispatch id, and which result answers the open dispatch.
Pages: docs/workflows.md (node fields, `sees`, `args`), docs/workflows/tool-use.md,
docs/workflows/failures.md (deadlines, superseded attempts).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent_engine.contracts.envelope import derive_id
from agent_engine.contracts.events import (
    DispatchedAgent,
    DispatchedTool,
    MemoryView,
    ModelChoice,
    NodeApprovalRequested,
    NodeCompleted,
    NodeContext,
    NodeDispatched,
    ToolCallRef,
)
from agent_engine.contracts.manifest import AgentSpec, NodeSpec, WorkflowManifest, lookup
from agent_engine.contracts.policy import OutputPolicy
from agent_engine.router.conversation import tool_defs, with_conversation
from agent_engine.router.state import NodeState, TaskState

MAX_CONTEXT_BYTES = 768 * 1024
"""A dispatch must fit a NATS message (1 MiB by default) with room for the agent's configuration."""


@dataclass(frozen=True)
class Fails:
    """The node cannot run: why (the node fails with it)."""

    reason: str


Built = NodeDispatched | NodeApprovalRequested | NodeCompleted | Fails
"""What dispatching a node's step amounts to: the dispatch, the approval it needs first, the answer a
fork's source recorded for it, or the reason it cannot run."""


def build_dispatch(state: TaskState, task_id: str, now: datetime, spec: NodeSpec, attempt: int, reason: str, *,
                   approved: bool = False, args_override: dict[str, Any] | None = None) -> Built:
    """What dispatching a node's current step amounts to (the caller records it): the dispatch, or the
    approval it needs first when the node requires one (retries and later turns are not asked again), a
    fork's recorded answer, or why the node cannot run. An agent node's step is its model's next turn or
    one of its tool calls."""
    node = state.nodes[spec.id]
    if spec.kind == "agent":
        recorded = state.recorded.get(f"{spec.id}@{node.revision}")
        if recorded is not None:  # a fork reuses what the source's model answered, tool calls and all
            return NodeCompleted(
                dispatch_id=dispatch_id_for(task_id, spec.id, node.revision, attempt, step(node)),
                node=spec.id, attempt=attempt, output=recorded["output"],
                provider=f"recorded:{recorded.get('provider')}", model=recorded.get("model"))
        if node.call is not None:
            return build_call(state, task_id, now, spec, node.call, attempt, reason)
    full = NodeContext(input=dict(state.input), upstream=upstream_outputs(state), feedback=state.feedback.get(spec.id),
                       revision=node.revision, merged=node.merged)
    context = profiled(full, spec)
    size = len(context.model_dump_json())
    budget = spec.sees.max_tokens if spec.sees else None
    problem = _context_problem(spec, size, budget)
    if problem:
        return Fails(problem)
    ask = spec.approval == "required" and not approved and attempt == 1 and not node.steps
    assert state.manifest is not None
    common = _Common(dispatch_id_for(task_id, spec.id, node.revision, attempt, step(node)), attempt,
                     now + timedelta(seconds=spec.timeout_s), reason, output_policy(state.manifest))
    if spec.kind == "agent":
        if ask:
            return NodeApprovalRequested(node=spec.id, kind="agent")
        return _agent_dispatch(state, spec, node, common, context, size, budget)
    args, missing = resolve_args(spec.args, full)
    if missing:
        return Fails(missing)
    if ask:
        return NodeApprovalRequested(node=spec.id, kind="tool", args=args)
    assert state.manifest is not None
    if args_override is None:  # a person's edit at an approval holds for every later dispatch of the node
        args_override = node.approved_args
    tool = dispatched_tool(state.manifest, spec.tool or "", args if args_override is None else args_override,
                           approved="" in node.approved, resumed=node.resumed_at)
    return common.dispatched(spec, context=context, tool=tool)


@dataclass(frozen=True)
class _Common:
    """What every dispatch of a node's step carries, whatever its kind."""

    dispatch_id: str
    attempt: int
    deadline: datetime
    reason: str
    check_output: OutputPolicy | None = None

    def dispatched(self, spec: NodeSpec, **fields: Any) -> NodeDispatched:
        return NodeDispatched(dispatch_id=self.dispatch_id, node=spec.id, kind=spec.kind or "tool",
                              attempt=self.attempt, deadline=self.deadline, reason=self.reason,
                              check_output=self.check_output, **fields)


def _context_problem(spec: NodeSpec, size: int, budget: int | None) -> str:
    """Why a context of `size` bytes cannot be dispatched ("" when it can)."""
    if size > MAX_CONTEXT_BYTES:
        return (f"the context for node '{spec.id}' (task input plus upstream outputs) is {size // 1024} KiB, over "
                f"the {MAX_CONTEXT_BYTES // 1024} KiB a dispatch may carry; pass large data as workspace files")
    if budget is not None and (size + 3) // 4 > budget:
        return (f"the context for node '{spec.id}' is about {(size + 3) // 4} tokens (estimated: JSON length / 4), "
                f"over its budget sees.max_tokens = {budget}; narrow sees.upstream or raise the budget")
    return ""


def _agent_dispatch(state: TaskState, spec: NodeSpec, node: NodeState, common: _Common, context: NodeContext,
                    size: int, budget: int | None) -> NodeDispatched | Fails:
    """An agent's model turn: its configuration, the model its tiers choose, earlier tool turns if any."""
    manifest = state.manifest
    assert manifest is not None
    agent = manifest.agents[spec.agent or ""]
    turn = None
    if node.steps:
        context, problem = with_conversation(context, node.steps, node.summary, agent, budget)
        size = len(context.model_dump_json())
        if not problem and size > MAX_CONTEXT_BYTES:
            problem = (f"the context and earlier tool turns of node '{spec.id}' are {size // 1024} KiB, over "
                       f"the {MAX_CONTEXT_BYTES // 1024} KiB a dispatch may carry; set summarise_over on agent "
                       f"'{spec.agent}' or lower keep_turns")
        if problem:
            return Fails(problem)
        turn = len(node.steps)
    extra: dict[str, Any] = {}
    if budget is not None:
        extra["token_budget"] = budget
    if spec.sees is not None and spec.sees.memory:
        extra["memory"] = MemoryView(layers=spec.sees.memory, project=manifest.project or manifest.name)
    if extra:  # told to the runner, not counted in the size the checks and tier rules saw
        context = context.model_copy(update=extra)
    schema = manifest.schemas.get(agent.output_schema) if agent.output_schema else None
    script = manifest.mock.get(spec.id, [])
    choice = choose_model(agent, spec, context, size)
    config = {**agent.model_dump(), "provider": choice.provider, "model": choice.model}
    dispatched_agent = DispatchedAgent(name=spec.agent or "", **config, output_schema_json=schema,
                                       mock_responses=script[node.runs_before:] or script[-1:],
                                       tool_defs=tool_defs(manifest, agent) or None)
    return common.dispatched(spec, context=context, turn=turn, agent=dispatched_agent, model_choice=choice)


def build_call(state: TaskState, task_id: str, now: datetime, spec: NodeSpec, index: int, attempt: int,
               reason: str) -> NodeDispatched:
    """The dispatch of call `index` of the last tool turn of an agent node, to the tool-runner."""
    manifest = state.manifest
    assert manifest is not None
    node = state.nodes[spec.id]
    turn = len(node.steps) - 1
    call = node.steps[-1]["calls"][index]
    return NodeDispatched(
        dispatch_id=dispatch_id_for(task_id, spec.id, node.revision, attempt, f"turn-{turn}-call-{index}"),
        node=spec.id, kind="tool", attempt=attempt, deadline=now + timedelta(seconds=spec.timeout_s),
        reason=reason, tool=dispatched_tool(manifest, call["tool"], call["args"],
                                            approved=call["call_id"] in node.approved),
        call=ToolCallRef(call_id=call["call_id"], turn=turn, index=index), check_output=output_policy(manifest))


def output_policy(manifest: WorkflowManifest) -> OutputPolicy | None:
    """The workflow's output checks, which every dispatch of its nodes carries to the runner."""
    return manifest.policy.output if manifest.policy is not None else None


def dispatched_tool(manifest: WorkflowManifest, name: str, args: dict[str, Any], *,
                    approved: bool = False, resumed: int = 0) -> DispatchedTool:
    """A tool call as the tool gate and the tool-runner get it. `policy` (the workflow's tool policy),
    `approved` and `resumed` are left out when there is none / it is false / 0, so other dispatches stay as
    they were recorded."""
    tool = manifest.tools[name]
    policy = manifest.policy.tools if manifest.policy is not None else None
    return DispatchedTool(name=name, builtin=tool.runs_as, args=args, side_effects=tool.has_side_effects or None,
                          project=(manifest.project or manifest.name) if tool.builtin.startswith("memory_") else None,
                          policy=policy, approved=True if approved else None, resumed=resumed or None)


# --- the context ------------------------------------------------------------------------------

def upstream_outputs(state: TaskState) -> dict[str, Any]:
    """What later nodes see of earlier ones: outputs, and {"error": ...} for a continued failure."""
    seen = dict(state.inherited)
    for node_id, node in state.nodes.items():
        if node.status == "succeeded":
            seen[node_id] = node.output
        elif node.status == "failed" and node.continued:
            seen[node_id] = {"error": node.error}
    return seen


def profiled(context: NodeContext, spec: NodeSpec) -> NodeContext:
    """The part of the context a node's `sees` profile lets it see."""
    profile = spec.sees
    if profile is None or (profile.input and profile.upstream == "all"):
        return context
    seen = ({} if profile.upstream == "none" else context.upstream if profile.upstream == "all"
            else {k: v for k, v in context.upstream.items() if k in profile.upstream})
    return context.model_copy(update={"input": context.input if profile.input else {}, "upstream": seen})


def choose_model(agent: AgentSpec, spec: NodeSpec, context: NodeContext, context_bytes: int) -> ModelChoice:
    """The model tier for one agent call (A6): the first tier rule that matches the context, else the
    node's model, else the agent's. Pure: the same context always gets the same model."""
    seen = {"input": context.input, "nodes": context.upstream}
    tokens = (context_bytes + 3) // 4
    for index, rule in enumerate(agent.tiers):
        if rule.when is not None and not rule.when.matches(seen):
            continue
        if rule.when_context_over is not None and tokens <= rule.when_context_over:
            continue
        tests = [f"{rule.when.field} matched" if rule.when else "",
                 f"context of about {tokens} tokens is over {rule.when_context_over}"
                 if rule.when_context_over else ""]
        why = rule.reason or "; ".join(t for t in tests if t) or "always"
        return ModelChoice(provider=rule.provider or agent.provider, model=rule.model,
                           reason=f"tier rule {index + 1}: {why}")
    if spec.model:
        return ModelChoice(provider=agent.provider, model=spec.model,
                           reason=f"node '{spec.id}' names its model")
    return ModelChoice(provider=agent.provider, model=agent.model, reason="the agent's model")


def resolve_args(args: dict[str, Any], context: NodeContext) -> tuple[dict[str, Any], str]:
    """Replace "$input.a.b" and "$nodes.<id>.a" strings with values from the task input or upstream outputs."""
    resolved: dict[str, Any] = {}
    for key, value in args.items():
        if isinstance(value, str) and value.startswith(("$input.", "$nodes.")):
            root, _, path = value[1:].partition(".")
            source: Any = context.input if root == "input" else context.upstream
            found, got = lookup(source, path)
            if not found:
                return {}, f"argument '{key}' refers to {value}, which the task does not have"
            resolved[key] = got
        else:
            resolved[key] = value
    return resolved, ""


# --- dispatch ids, and which result answers the open dispatch ---------------------------------

def dispatch_id_for(task_id: str, node: str, revision: int, attempt: int, step: str = "") -> str:
    parts: list[object] = [task_id, node] + ([f"revision-{revision}"] if revision else []) + [attempt]
    return derive_id(*parts, *([step] if step else []))


def step(node: NodeState) -> str:
    """Which step of an agent node is open: its model's turn N, or call I of turn N ("" for the first turn,
    which is also every tool node's only step, so their dispatch ids are as they always were)."""
    if node.call is not None:
        return f"turn-{len(node.steps) - 1}-call-{node.call}"
    return f"turn-{len(node.steps)}" if node.steps else ""


def open_node(state: TaskState, node_id: str, dispatch_id: str) -> NodeState | None:
    """The node, if `dispatch_id` is its open dispatch."""
    node = state.nodes.get(node_id)
    if node is None or node.status != "dispatched" or node.dispatch_id != dispatch_id:
        return None
    return node


def superseded(state: TaskState, node_id: str, attempt: int, dispatch_id: str) -> NodeState | None:
    """A late result of an earlier attempt of a node's current step that is still open is as good as the
    current one: taking it means a deadline that fired while results were queued costs nothing."""
    node = state.nodes.get(node_id)
    if node is None or node.status not in ("dispatched", "retry_scheduled"):
        return None
    latest = node.attempts if node.status == "dispatched" else node.attempts + 1  # a failed attempt may yet answer
    if not 1 <= attempt < latest:
        return None
    expected = dispatch_id_for(state.task_id, node_id, node.revision, attempt, step(node))
    return node if dispatch_id == expected else None
