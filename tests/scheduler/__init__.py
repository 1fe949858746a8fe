"""Tests of the DAG scheduler: acceptance on SQLite and the one-request-at-a-time moto server,
and unit tests of its pure core (`test_plan.py`: no store, no event loop)."""
