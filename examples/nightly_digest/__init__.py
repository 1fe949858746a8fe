"""A nightly digest: a schedule starts it, a fleet-wide limit paces its LLM fan-out."""

from examples.nightly_digest.app import ARTICLES, digest, run_digest, summarize

__all__ = ["ARTICLES", "digest", "run_digest", "summarize"]
