"""One JSON codec for every input, output, checkpoint, signal payload and event.

Values pass through it on the way to the store and to logs. Two ways to keep secrets
out of both:

- wrap a value in `Secret(value)` (or `Secret(value, name="GITHUB_TOKEN")`): it is
  written as a placeholder, never as itself; a named secret decodes through the
  codec's `resolve_secret` hook (e.g. read it back from the environment), an unnamed
  one decodes as the placeholder string;
- give the codec a `redact` hook, called on every (path, value) leaf, or a set of
  `redact_keys` (case-insensitive dict keys such as "password", "api_key").

Encoding validates the whole value first and names the path of the first value that is
not JSON (`input.files[2]`), so nothing is written when it fails.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import SerializationError

__all__ = ["REDACTED", "Codec", "Secret", "default_codec"]

REDACTED = "[REDACTED]"
_SECRET_KEY = "$secret"


@dataclass(frozen=True, slots=True)
class Secret:
    """A value that must reach neither the store nor a log."""

    value: Any = field(repr=False)
    name: str | None = None

    def __repr__(self) -> str:
        return f"Secret(name={self.name!r})" if self.name else "Secret(***)"

    __str__ = __repr__


RedactHook = Callable[[str, Any], Any]
SecretResolver = Callable[[str], Any]


class Codec:
    """JSON encode/decode with redaction; one instance per store."""

    def __init__(
        self,
        *,
        redact: RedactHook | None = None,
        redact_keys: Iterable[str] = (),
        resolve_secret: SecretResolver | None = None,
    ) -> None:
        self._redact = redact
        self._redact_keys = frozenset(k.lower() for k in redact_keys)
        self._resolve_secret = resolve_secret

    def to_jsonable(self, value: Any, *, where: str = "value") -> Any:
        """A redacted, JSON-ready copy of `value`; raises SerializationError naming the path."""
        return self._walk(value, where)

    def encode(self, value: Any, *, where: str = "value") -> str:
        """Compact JSON text of the redacted value."""
        clean = self._walk(value, where)
        return json.dumps(clean, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def decode(self, text: str | None) -> Any:
        if text is None or text == "":
            return None
        return self._unwalk(json.loads(text))

    def _walk(self, value: Any, path: str) -> Any:
        if isinstance(value, Secret):
            return {_SECRET_KEY: value.name} if value.name else REDACTED
        if self._redact is not None and not isinstance(value, (dict, list, tuple)):
            value = self._redact(path, value)
            if isinstance(value, Secret):
                return {_SECRET_KEY: value.name} if value.name else REDACTED
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise SerializationError(
                    f"{path} is {value!r}, which JSON cannot represent; use None or a finite number",
                    path=path,
                )
            return value
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    raise SerializationError(
                        f"{path} has a key {key!r} of type {type(key).__name__}; JSON object keys "
                        f"must be strings, convert it with str() first",
                        path=path,
                    )
                child = f"{path}.{key}"
                if key.lower() in self._redact_keys:
                    out[key] = REDACTED
                else:
                    out[key] = self._walk(item, child)
            return out
        if isinstance(value, (list, tuple)):
            return [self._walk(item, f"{path}[{i}]") for i, item in enumerate(value)]
        raise SerializationError(
            f"{path} is a {type(value).__name__}, which is not JSON-serialisable; pass plain "
            f"dicts, lists, strings, numbers, booleans or None (convert it first, e.g. with "
            f"dataclasses.asdict or str())",
            path=path,
        )

    def _unwalk(self, value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) == 1 and _SECRET_KEY in value:
                name = value[_SECRET_KEY]
                if self._resolve_secret is not None and isinstance(name, str):
                    return Secret(self._resolve_secret(name), name=name)
                return REDACTED
            return {k: self._unwalk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._unwalk(v) for v in value]
        return value


default_codec = Codec()
