"""Which artifacts a task page lists, how a text one is shown and under what name one downloads."""

from __future__ import annotations

from agent_engine.dashboard import artifacts, pages

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64
REF_A = {"artifact": A, "size": 1_048_576, "media_type": "text/plain; charset=utf-8", "name": "read.content"}
REF_B = {"artifact": B, "size": 10, "media_type": "image/png", "name": "out/<chart>.png"}
HISTORY = [
    {"type": "task.started", "data": {"workflow_manifest": {"nodes": []}}},
    {"type": "node.succeeded", "data": {"node": "read", "output": {"content": REF_A, "bytes": 1_048_576}}},
    {"type": "router.input", "data": {"input": {"type": "node.completed", "data": {
        "node": "draw", "output": {"files": [REF_B, REF_A]}}}}},
    {"type": "node.succeeded", "data": {"node": "again", "output": {"content": REF_A}}},
    # a reference-shaped dict with a bad id is no reference
    {"type": "node.succeeded", "data": {"node": "x", "output": {"v": {**REF_A, "artifact": "sha256:zz"}}}},
]


def test_a_task_lists_each_referenced_artifact_once_with_the_node_that_first_carried_it() -> None:
    rows = artifacts.listed(HISTORY)
    assert [(r.artifact, r.node, r.name, r.size) for r in rows] == [
        (A, "read", "read.content", 1_048_576), (B, "draw", "out/<chart>.png", 10)]
    assert artifacts.find(rows, B) == rows[1]
    assert artifacts.find(rows, "sha256:" + "c" * 64) is None  # an id no event names is not this task's


def test_a_dispatchs_own_copy_is_listed_and_found_by_its_longer_id() -> None:
    copy = {**REF_A, "object": "a" * 64 + "." + "0" * 32}  # an output the output gate checked
    rows = artifacts.listed([*HISTORY, {"type": "node.succeeded", "data": {"node": "checked", "output": {"c": copy}}}])
    assert [(r.artifact, r.node) for r in rows][2:] == [("sha256:" + copy["object"], "checked")]
    assert artifacts.find(rows, "sha256:" + copy["object"]) == rows[2]


def test_text_and_json_show_on_a_page_anything_else_downloads() -> None:
    assert artifacts.is_text("text/plain; charset=utf-8") and artifacts.is_text("application/json")
    assert artifacts.is_text("Text/Markdown")
    assert not artifacts.is_text("image/png") and not artifacts.is_text("application/octet-stream")


def test_a_preview_is_cut_and_bad_utf8_is_replaced() -> None:
    assert artifacts.preview(b"hello") == ("hello", False)
    text, cut = artifacts.preview(b"x" * 10 + b"\xff" + b"y" * 10, limit=11)
    assert cut and text == "x" * 10 + "\ufffd"


def test_a_download_name_is_harmless_whatever_the_label() -> None:
    assert artifacts.filename("read.content") == "read.content"
    assert artifacts.filename('../../etc/pass"wd\r\nX-Evil: 1') == "pass_wd_X-Evil_1"
    assert artifacts.filename("notes/.hidden") == "hidden"
    assert artifacts.filename("////") == "artifact" and artifacts.filename("é") == "artifact"
    header = artifacts.disposition('a "b".txt')
    assert header.startswith("attachment; ") and '"a_b_.txt"' in header and "\n" not in header


def test_the_section_and_the_page_escape_what_others_wrote() -> None:
    rows = artifacts.listed(HISTORY)
    html = pages.artifacts("t1", rows)
    assert "&lt;chart&gt;" in html and "<chart>" not in html
    assert html.count('class="view"') == 1  # the text one; the PNG only downloads
    assert f'href="/tasks/t1/artifacts/sha256%3A{"a" * 64}/download"' in html
    assert "No event of this task refers to an artifact." in pages.artifacts("t1", [])
    page = pages.artifact_page("t1", rows[0], "<script>alert(1)</script>", 65536)
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert "Showing the first 65,536 of 1,048,576 bytes" in page
    assert "Showing the first" not in pages.artifact_page("t1", rows[0], "short", None)
