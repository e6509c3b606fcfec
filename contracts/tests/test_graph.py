"""The one graph walk validation and the router share."""

from __future__ import annotations

from agent_engine.contracts.graph import find_cycle, predecessors, reachable, reachable_back, successors
from agent_engine.contracts.manifest import EdgeSpec, NodeSpec, ToolSpec, WorkflowManifest
from agent_engine.contracts.validation import blocking

# start -> split -> a -> b -> merge -> done, and split -> c -> merge
OUT = {"start": ["split"], "split": ["a", "c"], "a": ["b"], "b": ["merge"], "c": ["merge"], "merge": ["done"],
       "done": []}


def manifest(edges: list[tuple[str, str]], nodes: list[str]) -> WorkflowManifest:
    return WorkflowManifest.model_validate({
        "name": "w", "nodes": [{"id": n, "role": "LINEAR"} for n in nodes],
        "edges": [{"from": a, "to": b} for a, b in edges]})


def test_maps_keep_edge_order_and_leave_out_edges_to_undeclared_nodes() -> None:
    m = manifest([("a", "c"), ("a", "b"), ("a", "ghost"), ("ghost", "b"), ("b", "c")], ["a", "b", "c"])
    assert successors(m) == {"a": ["c", "b"], "b": ["c"], "c": []}
    assert predecessors(m) == {"a": [], "b": ["a"], "c": ["a", "b"]}


def test_reachable_includes_the_start() -> None:
    assert reachable("split", OUT) == {"split", "a", "b", "c", "merge", "done"}
    assert reachable("done", OUT) == {"done"}
    assert reachable("unknown", OUT) == {"unknown"}


def test_stop_is_never_entered() -> None:
    assert reachable("a", OUT, stop="merge") == {"a", "b"}
    assert reachable("split", OUT, stop="merge") == {"split", "a", "b", "c"}
    assert reachable("merge", OUT, stop="merge") == {"merge", "done"}  # the start is always walked from


def test_ends_are_entered_but_not_left() -> None:
    assert reachable("split", OUT, ends={"merge"}) == {"split", "a", "b", "c", "merge"}
    assert reachable("merge", OUT, ends={"merge"}) == {"merge"}  # the start too


def test_reachable_back_walks_predecessors() -> None:
    inc = {"start": [], "split": ["start"], "a": ["split"], "b": ["a"], "c": ["split"], "merge": ["b", "c"],
           "done": ["merge"]}
    assert reachable_back("b", inc) == {"b", "a", "split", "start"}
    assert reachable("a", OUT) & reachable_back("merge", inc) == {"a", "b", "merge"}


def test_find_cycle_names_the_closing_path() -> None:
    assert find_cycle(list(OUT), OUT) is None
    looped = {**OUT, "b": ["merge", "a"]}
    assert find_cycle(list(looped), looped) == ["a", "b", "a"]
    assert find_cycle(["x"], {"x": ["x"]}) == ["x", "x"]


def test_a_workflow_of_thousands_of_nodes_is_validated_without_running_out_of_stack() -> None:
    """Found in review: the cycle check recursed once per node, so a long chain raised RecursionError."""
    nodes = [NodeSpec(id="n0", role="START", kind="tool", tool="t")]
    nodes += [NodeSpec(id=f"n{i}", role="LINEAR", kind="tool", tool="t") for i in range(1, 3000)]
    nodes.append(NodeSpec(id="done", role="EXIT", status="succeeded"))
    edges = [EdgeSpec(from_=f"n{i}", to=f"n{i + 1}") for i in range(2999)] + [EdgeSpec(from_="n2999", to="done")]
    manifest = WorkflowManifest(name="long", nodes=nodes, edges=edges, tools={"t": ToolSpec(builtin="text_stats")})
    assert blocking(manifest) == []
    looped = manifest.model_copy(update={"edges": [*edges, EdgeSpec(from_="n2999", to="n5")]})
    assert "acyclic" in [e.rule for e in blocking(looped)]
