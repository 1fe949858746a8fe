"""The DynamoDB backend: PynamoDB models over one table, for a fleet of workers.

Modules match the SQLite backend's by name: `store` (the Store protocol's methods),
`connection` (the one choke point every request goes through), `schema` (table
creation, checks, and the infrastructure-as-code export), `encoding` (records to items
and back), `tasks`, `history` and `projects`; plus `models` (keys and PynamoDB models)
and `base` (request building and the visibility rules of reads). Importing this package
imports pynamodb: `open_store` does so only for a `dynamodb://` URL.
"""

from orchestrator.store.dynamodb.schema import (
    DATA_ACTIONS,
    cloudformation,
    iam_policy,
    table_definition,
    terraform,
)
from orchestrator.store.dynamodb.store import DynamoDBStore

__all__ = ["DATA_ACTIONS", "DynamoDBStore", "cloudformation", "iam_policy", "table_definition", "terraform"]
