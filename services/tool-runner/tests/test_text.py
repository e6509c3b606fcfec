"""text_stats: known numbers for known texts."""

from __future__ import annotations

from pathlib import Path

from agent_engine.tool_runner.tools import REGISTRY, context
from agent_engine.tool_runner.tools.text import text_stats

TEXT = "Alpha beta gamma. Beta gamma!\nGamma delta?"
CTX = context(Path("."))


def test_text_stats_on_a_known_text() -> None:
    assert text_stats({"text": TEXT}, CTX) == {
        "chars": 42, "words": 7, "lines": 2, "sentences": 3,
        "top_words": [{"word": "gamma", "count": 3}, {"word": "beta", "count": 2},
                      {"word": "alpha", "count": 1}, {"word": "delta", "count": 1}],
    }


def test_text_stats_counts_one_letter_words() -> None:
    stats = text_stats({"text": "I am a cat."}, CTX)
    assert stats["words"] == 4
    assert stats["top_words"] == []  # only words longer than three letters are ranked


def test_text_stats_top_limits_the_ranking() -> None:
    assert text_stats({"text": TEXT, "top": 2}, CTX)["top_words"] == [
        {"word": "gamma", "count": 3}, {"word": "beta", "count": 2}]


def test_text_stats_on_empty_and_one_line_text() -> None:
    assert text_stats({"text": ""}, CTX) == {"chars": 0, "words": 0, "lines": 0, "sentences": 0, "top_words": []}
    assert text_stats({"text": "no full stop"}, CTX)["lines"] == 1


def test_text_stats_output_satisfies_its_result_schema() -> None:
    REGISTRY["text_stats"].check_result(text_stats({"text": TEXT}, CTX))
