"""The embedded backend: one SQLite file in WAL mode, safe for several processes on one machine.

Modules match the DynamoDB backend's by name: `store` (the Store protocol's methods),
`connection` (opening, locking, busy retries), `schema` (tables and checks), `encoding`
(records to rows and back), `tasks`, `history` (events, metrics, pipelines) and
`projects` (the users' project history). `retention` has no DynamoDB twin (its TTL
deletes items): it is the purge, and when writers run it.
"""

from orchestrator.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
