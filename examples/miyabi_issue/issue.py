"""Parse an issue (markdown task list or JSON) into sub-tasks with priorities and dependencies.

Markdown: a `# #N Title` heading, then `- [P1] key: summary -> path (after a, b)` items.
JSON: `{"number": N, "title": ..., "body": ..., "tasks": [{"key", "priority", "summary",
"file", "after": [...]}]}`. Pure and deterministic: the coordinator may run again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Issue", "SubTask", "parse_issue"]

_HEADING = re.compile(r"^#\s+#(?P<number>\d+)\s+(?P<title>.+?)\s*$")
_ITEM = re.compile(
    r"^-\s+\[(?P<prio>P[0-3])\]\s+(?P<key>[a-z0-9][a-z0-9_-]*):\s+(?P<summary>.+?)\s+->\s+(?P<file>\S+)"
    r"(?:\s+\(after\s+(?P<after>[a-z0-9_, -]+)\))?\s*$"
)


@dataclass(frozen=True, slots=True)
class SubTask:
    key: str
    priority: int  # 0 (P0, highest) .. 3
    summary: str
    file: str
    after: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Issue:
    number: int
    title: str
    body: str
    tasks: tuple[SubTask, ...] = field(default_factory=tuple)


def _check(issue: Issue) -> Issue:
    keys = [t.key for t in issue.tasks]
    if not keys:
        raise ValueError(f"issue #{issue.number} lists no tasks; add '- [P1] key: summary -> path' items")
    if len(set(keys)) != len(keys):
        raise ValueError(f"issue #{issue.number} repeats a task key: {keys}")
    for task in issue.tasks:
        unknown = [a for a in task.after if a not in keys]
        if unknown:
            raise ValueError(f"issue #{issue.number}: task {task.key!r} comes after unknown task(s) {unknown}")
    return issue


def _from_json(data: dict[str, Any]) -> Issue:
    tasks = tuple(
        SubTask(
            key=str(t["key"]),
            priority=int(str(t.get("priority", "P2")).lstrip("Pp")),
            summary=str(t["summary"]),
            file=str(t["file"]),
            after=tuple(t.get("after", ())),
        )
        for t in data.get("tasks", [])
    )
    return Issue(int(data["number"]), str(data["title"]), str(data.get("body", "")), tasks)


def parse_issue(text: str) -> Issue:
    """The issue in `text`; ValueError says which line or field is wrong."""
    if text.lstrip().startswith("{"):
        return _check(_from_json(json.loads(text)))
    number, title, body, tasks = 0, "", [], []
    for line in text.splitlines():
        heading = _HEADING.match(line)
        item = _ITEM.match(line.strip())
        if heading and not number:
            number, title = int(heading["number"]), heading["title"]
        elif item:
            after = tuple(a.strip() for a in (item["after"] or "").split(",") if a.strip())
            tasks.append(SubTask(item["key"], int(item["prio"][1]), item["summary"], item["file"], after))
        elif line.strip().startswith("- ["):
            raise ValueError(f"issue task line not understood: {line.strip()!r}; use '- [P1] key: summary -> path'")
        elif number and not line.startswith("#"):
            body.append(line)
    if not number:
        raise ValueError("issue has no '# #<number> <title>' heading")
    return _check(Issue(number, title, "\n".join(body).strip(), tuple(tasks)))
