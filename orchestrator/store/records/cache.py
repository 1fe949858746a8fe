"""A cached agent output: written by a genuine completion, read until it expires."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ValidationError

__all__ = ["CacheEntry"]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """The output stored under `key` (a digest from `rules.cache.cache_key`), until `expires_at`."""

    key: str
    agent: str
    output: Any
    created_at: float
    expires_at: float
    session_id: str | None = None  # the completion that wrote it
    task_id: str | None = None

    def __post_init__(self) -> None:
        if not self.key or "#" in self.key or len(self.key) > 128:
            raise ValidationError(f"cache key {self.key!r} is not valid: use the digest rules.cache.cache_key makes")
        if self.expires_at <= self.created_at:
            raise ValidationError(
                f"cache entry {self.key}: expires_at {self.expires_at} is not after created_at {self.created_at}")
