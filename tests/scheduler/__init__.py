"""Acceptance tests of the DAG scheduler, on SQLite and on the one-request-at-a-time moto server."""
