"""The rule-based "intelligence" of the t-developer example: no network, no model weights.

Each function is pure and deterministic, so a re-run agent produces the same output
(agents run at least once) and the tests can assert exact results.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENTITY_FIELDS",
    "TEMPLATES",
    "Template",
    "backend_of",
    "components_of",
    "database_of",
    "entities_of",
    "keywords_of",
    "match_templates",
    "project_name_of",
    "slug_of",
    "ui_of",
]

_UI = {"react": "React", "vue": "Vue", "svelte": "Svelte", "angular": "Angular"}
_BACKENDS = {"node": "Node.js", "express": "Node.js", "python": "Python", "fastapi": "Python", "flask": "Python"}
_DATABASES = {"mongo": "MongoDB", "mongodb": "MongoDB", "postgres": "PostgreSQL", "sqlite": "SQLite"}

#: Entities a request may mention, with the fields their model gets.
ENTITY_FIELDS: Mapping[str, Mapping[str, str]] = {
    "todo": {"title": "string", "done": "boolean"},
    "note": {"title": "string", "body": "string"},
    "post": {"title": "string", "body": "string", "published": "boolean"},
    "product": {"name": "string", "price": "number"},
    "task": {"title": "string", "due": "string", "done": "boolean"},
}
_ALIASES = {"todos": "todo", "notes": "note", "blog": "post", "posts": "post", "shop": "product",
            "store": "product", "products": "product", "tasks": "task", "kanban": "task"}


@dataclass(frozen=True, slots=True)
class Template:
    """A project skeleton the generator starts from, and the stack it covers."""

    name: str
    stack: frozenset[str]
    snippets: tuple[str, ...]


TEMPLATES: tuple[Template, ...] = (
    Template("react-node", frozenset({"React", "Node.js"}), ("crud-router", "fetch-hook", "list-view", "form-view")),
    Template("react-node-mongo", frozenset({"React", "Node.js", "MongoDB"}),
             ("crud-router", "mongo-model", "fetch-hook", "list-view", "form-view")),
    Template("vue-node", frozenset({"Vue", "Node.js"}), ("crud-router", "list-view")),
    Template("react-python", frozenset({"React", "Python"}), ("fetch-hook", "list-view", "form-view")),
    Template("static-react", frozenset({"React"}), ("list-view", "form-view")),
)


def keywords_of(text: str) -> list[str]:
    """Lower-case words of a request, in order, without duplicates."""
    return list(dict.fromkeys(re.findall(r"[a-z0-9]+", text.lower())))


def project_name_of(text: str) -> str:
    """"a todo app with React" -> "Todo App"; falls back to "My App"."""
    match = re.search(r"\b(?:an?|the|my)\s+([a-z0-9 -]+?)\s+(app|site|service|api|tool)\b", text.lower())
    if match is None:
        return "My App"
    return f"{match.group(1)} {match.group(2)}".title()


def slug_of(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "app"


def ui_of(words: Sequence[str]) -> str:
    """The UI framework a request names (React when it names none)."""
    return next((_UI[w] for w in words if w in _UI), "React")


def backend_of(words: Sequence[str]) -> str | None:
    """The API runtime a request names; None for a front-end-only project."""
    found = next((_BACKENDS[w] for w in words if w in _BACKENDS), None)
    if found is None and ("api" in words or "backend" in words or "server" in words):
        return "Node.js"
    return found


def database_of(words: Sequence[str]) -> str | None:
    return next((_DATABASES[w] for w in words if w in _DATABASES), None)


def entities_of(words: Sequence[str]) -> list[dict[str, Any]]:
    """The data models a request implies, with their fields ("item" when none is named)."""
    names = list(dict.fromkeys(_ALIASES.get(w, w) for w in words if _ALIASES.get(w, w) in ENTITY_FIELDS))
    if not names:
        return [{"name": "Item", "plural": "items", "fields": {"name": "string"}}]
    return [{"name": name.title(), "plural": f"{name}s", "fields": dict(ENTITY_FIELDS[name])} for name in names]


def components_of(entities: Sequence[Mapping[str, Any]], has_api: bool) -> dict[str, list[str]]:
    """UI components and API routes to generate for the entities."""
    ui = ["App"] + [f"{e['name']}{kind}" for e in entities for kind in ("List", "Form")]
    api = [f"/api/{e['plural']}" for e in entities] if has_api else []
    return {"ui": ui, "api": api}


def match_templates(stack: Sequence[str]) -> list[dict[str, Any]]:
    """Templates ranked by match rate: the share of the wanted stack each covers, minus extras."""
    wanted = set(stack)
    scored: list[tuple[float, str]] = []
    for template in TEMPLATES:
        covered = len(wanted & template.stack) / len(wanted) if wanted else 0.0
        extra = len(template.stack - wanted) * 0.1
        scored.append((round(max(0.0, covered - extra), 3), template.name))
    scored.sort(key=lambda r: (-r[0], r[1]))
    return [{"template": name, "match_rate": rate} for rate, name in scored]
