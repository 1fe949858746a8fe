"""The contract suite, the rulebook: the decisions where the backends once differed. How the
contract files are split: tests/conftest.py."""

from __future__ import annotations

from orchestrator.testing.contract import RulebookContract


class TestRulebookContract(RulebookContract):
    """The decisions where the backends once differed (docs/design.md, "One rulebook, two backends")."""
