"""The embedded backend: one SQLite file in WAL mode, safe for several processes on one machine.

Modules match the DynamoDB backend's by name: `store` (the Store protocol's methods),
`connection` (opening, locking, busy retries), `schema` (tables and checks), `encoding`
(records to rows and back), `tasks`, `history` (events, metrics, pipelines, retention)
and `projects` (the users' project history).
"""

from orchestrator.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
