"""The users' project history in the DynamoDB store: items `USER#<uid>` / `PROJECT#<pid>`.

Each write is one conditional UpdateItem through the choke point (`Caller`): a put
sets the descriptive fields and keeps `created_at` and the download count with
`if_not_exists`; a download is `ADD download_count 1 SET last_download = :id` on the
condition `last_download <> :id`, so a retried download is refused by DynamoDB itself
and read back as already applied. Listing is one Query on the user's partition.
"""

from __future__ import annotations

import json
from typing import Any

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.operand import Path
from pynamodb.expressions.update import Action

from orchestrator.errors import UserProjectNotFoundError
from orchestrator.store import rules
from orchestrator.store.dynamodb.base import DynamoDBBase, put
from orchestrator.store.dynamodb.connection import DynamoCallError
from orchestrator.store.dynamodb.models import project_sk, user_pk
from orchestrator.store.records import SCHEMA_VERSION, Page, UserProjectRecord, check_id

__all__ = ["ProjectOps"]



class ProjectOps(DynamoDBBase):
    """`put_user_project`, `get_user_project`, `list_user_projects`, `record_download`."""

    def _project_missing(self, user_id: str, project_id: str) -> UserProjectNotFoundError:
        return UserProjectNotFoundError(
            f"user {user_id} has no project {project_id!r} in {self.describe()}; store it first with "
            f"put_user_project (or StateAPI.save_user_project), or list the user's projects with "
            f"`orchestrator projects {user_id}`",
            user_id=user_id, project_id=project_id,
        )

    def _known_version(self) -> Condition:
        """The stored item (if any) has a schema version this code may overwrite."""
        m = self.models.user_project
        return m.v <= SCHEMA_VERSION  # type: ignore[no-any-return]

    async def _after_refusal(self, exc: DynamoCallError, user_id: str, project_id: str) -> UserProjectRecord:
        """Explain a failed condition by reading the item: absent, newer (SchemaError), or as stored."""
        if not exc.condition_failed:
            raise self._caller.to_error(exc) from exc
        raw = await self.get_raw(user_pk(user_id), project_sk(project_id))
        if raw is None:
            raise self._project_missing(user_id, project_id) from None
        return self.items.user_project(raw)  # refuses an item of a newer schema

    async def put_user_project(self, record: UserProjectRecord) -> UserProjectRecord:
        m = self.models.user_project
        what = f"metadata of project {record.project_id} of user {record.user_id}"
        metadata_text = self.codec.encode(dict(record.metadata), where=what)
        now = self.clock.now()
        actions: list[Action] = [
            m.v.set(SCHEMA_VERSION), m.kind.set("user_project"), m.user_id.set(record.user_id),
            m.project_id.set(record.project_id), m.project_name.set(record.project_name),
            put(m.description, record.description or None), m.tech_stack.set(json.dumps(list(record.tech_stack))),
            put(m.file_path, record.file_path), m.size_mb.set(record.size_mb), m.metadata.set(metadata_text),
            m.updated_at.set(now), m.created_at.set(m.created_at | now),
            m.download_count.set(m.download_count | record.download_count),
        ]
        if record.last_accessed is not None:
            actions.append(m.last_accessed.set(m.last_accessed | record.last_accessed))
        condition = m.PK.does_not_exist() | self._known_version()
        params = self.update_params(user_pk(record.user_id), project_sk(record.project_id), actions, condition,
                                    return_new=True)
        try:
            answer = await self._caller.call("UpdateItem", params)
        except DynamoCallError as exc:
            await self._after_refusal(exc, record.user_id, record.project_id)  # SchemaError for a newer item
            raise self._caller.to_error(exc) from exc
        return self.items.user_project(answer["Attributes"])

    async def get_user_project(self, user_id: str, project_id: str) -> UserProjectRecord:
        check_id("user", user_id)
        check_id("project", project_id)
        raw = await self.get_raw(user_pk(user_id), project_sk(project_id))
        if raw is None:
            raise self._project_missing(user_id, project_id)
        return self.items.user_project(raw)

    async def list_user_projects(
        self, user_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[UserProjectRecord]:
        rules.check_page_limit(limit)
        check_id("user", user_id)
        pk = user_pk(user_id)
        start = None
        if cursor is not None:
            check_id("project", cursor, where="the cursor of list_user_projects")
            start = {"PK": {"S": pk}, "SK": {"S": project_sk(cursor)}}
        cond = (Path("PK") == pk) & Path("SK").startswith("PROJECT#")
        # One more than asked: a full page then says for sure whether another follows.
        raws, more = await self.query_raw(pk, cond, limit=limit + 1, start=start, pages=False)
        items = tuple(self.items.user_project(r) for r in raws[:limit])
        next_cursor = items[-1].project_id if items and (len(raws) > limit or more) else None
        return Page(items, next_cursor)

    async def record_download(self, user_id: str, project_id: str, download_id: str) -> UserProjectRecord:
        check_id("user", user_id)
        check_id("project", project_id)
        check_id("download", download_id)
        m = self.models.user_project
        now = self.clock.now()
        actions: list[Action] = [
            m.download_count.add(1), m.last_download.set(download_id), m.last_accessed.set(now),
            m.updated_at.set(now),
        ]
        condition = (m.PK.exists() & self._known_version()
                     & (m.last_download.does_not_exist() | (m.last_download != download_id)))
        params = self.update_params(user_pk(user_id), project_sk(project_id), actions, condition, return_new=True)
        try:
            answer: dict[str, Any] = await self._caller.call("UpdateItem", params)
        except DynamoCallError as exc:
            # The item exists at a known version, so `last_download` was this id: a retry.
            return await self._after_refusal(exc, user_id, project_id)
        return self.items.user_project(answer["Attributes"])
