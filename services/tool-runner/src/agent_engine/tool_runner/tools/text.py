"""text_stats: counts and the most frequent words of a text."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from agent_engine.tool_runner.tools.base import Context, builtin

WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


def text_stats(args: dict[str, Any], _ctx: Context) -> dict[str, Any]:
    text: str = args["text"]
    words = WORD.findall(text.lower())
    top = Counter(w for w in words if len(w) > 3).most_common(args.get("top", 5))
    return {
        "chars": len(text), "words": len(words), "lines": len(text.splitlines()) or (1 if text else 0),
        "sentences": len(re.findall(r"[.!?]+(?:\s|$)", text)),
        "top_words": [{"word": w, "count": c} for w, c in top],
    }


COUNT = {"type": "integer", "minimum": 0}
TEXT_STATS = builtin(
    "text_stats", text_stats,
    result_schema={"type": "object", "required": ["chars", "words", "lines", "sentences", "top_words"],
                   "properties": {"chars": COUNT, "words": COUNT, "lines": COUNT, "sentences": COUNT,
                                  "top_words": {"type": "array", "items": {
                                      "type": "object", "required": ["word", "count"],
                                      "properties": {"word": {"type": "string"}, "count": COUNT}}}}},
)
