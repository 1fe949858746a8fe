"""The users' project history on every Store backend.

`UserProjectContract` needs the same `store` fixture as `StoreContract` (an initialized
store opened with a `FakeClock`). Planting an item of a newer schema version goes
through `write_newer_user_project_version`; override it for a third-party backend.
`UserProjectDynamoDBContract` adds, for DynamoDB stores, a lost response of a download
(counted once) and the requests a listing sends (one Query, no Scan).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import anyio
import pytest

from orchestrator.errors import SchemaError, UserProjectNotFoundError, ValidationError
from orchestrator.store import SCHEMA_VERSION, Store, UserProjectRecord
from orchestrator.testing.contract import clock_of
from orchestrator.testing.contract_dynamodb import count_requests, lose_response

__all__ = ["UserProjectContract", "UserProjectDynamoDBContract", "todo_app"]


def todo_app(project_id: str = "todo-app", user_id: str = "u-1", **fields: Any) -> UserProjectRecord:
    """An example project ("My Todo App", React / Node.js / MongoDB)."""
    values: dict[str, Any] = {
        "project_name": "My Todo App", "description": "a todo app", "tech_stack": ("React", "Node.js", "MongoDB"),
        "file_path": f"/downloads/{project_id}.zip", "size_mb": 2.5, "metadata": {"template": "react-node"},
    }
    values.update(fields)
    return UserProjectRecord(user_id, project_id, **values)


class UserProjectContract:
    """put/get/list/record_download of user projects; needs a `store` fixture (see module doc)."""

    pytestmark = pytest.mark.anyio

    async def write_newer_user_project_version(self, store: Store, user_id: str, project_id: str) -> None:
        """Bump the stored schema version of a user project's item/row past SCHEMA_VERSION."""
        desc = store.describe()
        if desc.backend == "sqlite":
            with sqlite3.connect(desc.location) as conn:
                conn.execute("UPDATE user_projects SET v = ? WHERE user_id = ? AND project_id = ?",
                             (SCHEMA_VERSION + 1, user_id, project_id))
            return
        if desc.backend == "dynamodb":
            import boto3

            client = boto3.client("dynamodb", region_name=desc.region, endpoint_url=desc.endpoint)
            client.update_item(
                TableName=desc.location,
                Key={"PK": {"S": f"USER#{user_id}"}, "SK": {"S": f"PROJECT#{project_id}"}},
                UpdateExpression="SET #v = :v",
                ExpressionAttributeNames={"#v": "v"},
                ExpressionAttributeValues={":v": {"N": str(SCHEMA_VERSION + 1)}},
            )
            return
        raise AssertionError(f"override write_newer_user_project_version() for backend {desc.backend!r}")

    async def test_put_then_get_round_trips_every_field(self, store: Store) -> None:
        now = clock_of(store).now()
        stored = await store.put_user_project(todo_app())
        found = await store.get_user_project("u-1", "todo-app")
        assert found == stored
        assert (found.project_name, found.description, found.tech_stack, found.file_path, found.size_mb) == (
            "My Todo App", "a todo app", ("React", "Node.js", "MongoDB"), "/downloads/todo-app.zip", 2.5)
        assert (found.download_count, found.last_accessed, found.created_at, found.updated_at) == (0, None, now, now)
        assert dict(found.metadata) == {"template": "react-node"}
        assert found.schema_version == SCHEMA_VERSION

    async def test_optional_fields_round_trip_empty(self, store: Store) -> None:
        await store.put_user_project(UserProjectRecord("u-1", "bare", "Bare"))
        found = await store.get_user_project("u-1", "bare")
        assert (found.description, found.tech_stack, found.file_path, found.size_mb, dict(found.metadata)) == (
            "", (), None, 0.0, {})

    async def test_upsert_changes_the_description_and_keeps_count_and_created_at(self, store: Store) -> None:
        created = await store.put_user_project(todo_app())
        await store.record_download("u-1", "todo-app", "d-1")
        clock_of(store).advance(10)
        updated = await store.put_user_project(todo_app(project_name="Todo v2", size_mb=3.0, file_path=None,
                                                        download_count=0, tech_stack=("Vue",)))
        assert (updated.project_name, updated.size_mb, updated.file_path, updated.tech_stack) == (
            "Todo v2", 3.0, None, ("Vue",))
        assert updated.download_count == 1
        assert updated.created_at == created.created_at
        assert updated.updated_at == created.created_at + 10
        assert await store.get_user_project("u-1", "todo-app") == updated

    async def test_a_new_project_starts_from_the_given_count_to_import_history(self, store: Store) -> None:
        imported = await store.put_user_project(todo_app(download_count=7, last_accessed=1000.0))
        assert (imported.download_count, imported.last_accessed) == (7, 1000.0)

    async def test_record_download_counts_and_updates_last_accessed(self, store: Store) -> None:
        await store.put_user_project(todo_app())
        clock_of(store).advance(5)
        first = await store.record_download("u-1", "todo-app", "d-1")
        assert (first.download_count, first.last_accessed) == (1, clock_of(store).now())
        clock_of(store).advance(5)
        second = await store.record_download("u-1", "todo-app", "d-2")
        assert (second.download_count, second.last_accessed) == (2, clock_of(store).now())
        assert (await store.get_user_project("u-1", "todo-app")).download_count == 2

    async def test_a_retried_download_id_is_counted_once(self, store: Store) -> None:
        await store.put_user_project(todo_app())
        first = await store.record_download("u-1", "todo-app", "d-1")
        clock_of(store).advance(5)
        retried = await store.record_download("u-1", "todo-app", "d-1")
        assert retried == first
        assert (await store.get_user_project("u-1", "todo-app")).download_count == 1

    async def test_list_user_projects_pages_by_project_id(self, store: Store) -> None:
        for pid in ("p-c", "p-a", "p-e", "p-b", "p-d"):
            await store.put_user_project(todo_app(pid))
        await store.put_user_project(todo_app("p-z", user_id="u-2"))
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await store.list_user_projects("u-1", limit=2, cursor=cursor)
            assert len(page.items) <= 2 and all(p.user_id == "u-1" for p in page.items)
            seen.extend(p.project_id for p in page.items)
            pages += 1
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == ["p-a", "p-b", "p-c", "p-d", "p-e"]
        assert pages == 3
        assert (await store.list_user_projects("nobody")).items == ()

    async def test_unknown_project_raises_user_project_not_found(self, store: Store) -> None:
        await store.put_user_project(todo_app())
        with pytest.raises(UserProjectNotFoundError) as info:
            await store.get_user_project("u-1", "no-such")
        assert (info.value.user_id, info.value.project_id) == ("u-1", "no-such")  # type: ignore[attr-defined]
        with pytest.raises(UserProjectNotFoundError):
            await store.get_user_project("u-2", "todo-app")
        with pytest.raises(UserProjectNotFoundError):
            await store.record_download("u-1", "no-such", "d-1")
        assert (await store.list_user_projects("u-1")).items[0].project_id == "todo-app"

    async def test_invalid_ids_and_values_are_refused_before_writing(self, store: Store) -> None:
        with pytest.raises(ValidationError):
            UserProjectRecord("u#1", "p", "P")
        with pytest.raises(ValidationError):
            UserProjectRecord("u-1", "a/b", "P")
        with pytest.raises(ValidationError):
            UserProjectRecord("u-1", "p", "")
        with pytest.raises(ValidationError):
            UserProjectRecord("u-1", "p", "P", size_mb=-1.0)
        with pytest.raises(ValidationError):
            UserProjectRecord("u-1", "p", "P", download_count=-1)
        with pytest.raises(ValidationError):
            UserProjectRecord("u-1", "p", "P", tech_stack="React")  # type: ignore[arg-type]
        await store.put_user_project(todo_app())
        with pytest.raises(ValidationError):
            await store.record_download("u-1", "todo-app", "d#1")
        with pytest.raises(ValidationError):
            await store.get_user_project("u-1", "PROJECT#x")
        with pytest.raises(ValidationError):
            await store.list_user_projects("u-1", cursor="not a cursor")
        with pytest.raises(ValidationError):
            await store.list_user_projects("u-1", limit=0)
        assert (await store.get_user_project("u-1", "todo-app")).download_count == 0

    async def test_non_json_metadata_is_refused_and_the_project_unchanged(self, store: Store) -> None:
        await store.put_user_project(todo_app())
        with pytest.raises(ValidationError):
            await store.put_user_project(todo_app(project_name="Changed", metadata={"x": object()}))
        assert (await store.get_user_project("u-1", "todo-app")).project_name == "My Todo App"

    async def test_project_of_a_newer_schema_version_is_refused(self, store: Store) -> None:
        await store.put_user_project(todo_app())
        await self.write_newer_user_project_version(store, "u-1", "todo-app")
        with pytest.raises(SchemaError):
            await store.get_user_project("u-1", "todo-app")
        with pytest.raises(SchemaError):
            await store.record_download("u-1", "todo-app", "d-1")
        with pytest.raises(SchemaError):
            await store.put_user_project(todo_app(project_name="Changed"))
        with pytest.raises(SchemaError):
            await store.list_user_projects("u-1")


class UserProjectDynamoDBContract:
    """A download whose response was lost is counted once; a listing is one Query."""

    pytestmark = pytest.mark.anyio

    async def test_lost_response_of_a_download_is_counted_once(self, store: Store) -> None:
        await store.put_user_project(todo_app())
        with lose_response(store) as lost:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:  # backoff sleeps on the FakeClock: keep it ticking

                    async def tick() -> None:
                        while True:
                            await anyio.sleep(0.001)
                            clock_of(store).advance(0.01)

                    tg.start_soon(tick)
                    counted = await store.record_download("u-1", "todo-app", "d-1")
                    tg.cancel_scope.cancel()
        assert lost.fired == 1 and lost.ops == ["UpdateItem"]
        assert counted.download_count == 1
        assert (await store.get_user_project("u-1", "todo-app")).download_count == 1

    async def test_listing_a_users_projects_is_one_query_and_never_a_scan(self, store: Store) -> None:
        for pid in ("p-a", "p-b", "p-c"):
            await store.put_user_project(todo_app(pid))
        with count_requests(store) as counted:
            page = await store.list_user_projects("u-1", limit=10)
        assert [p.project_id for p in page.items] == ["p-a", "p-b", "p-c"] and page.cursor is None
        assert counted.ops == ["Query"]
