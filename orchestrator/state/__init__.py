"""The state API: record sessions, agent executions, progress, logs and metrics from
code that runs its own loop (no scheduler), DESIGN.md §6 "External sessions".

    async with await SessionRecorder.start(store, pipeline="deploy", tasks=["cdk"]) as rec:
        await rec.task_started("cdk")
        await rec.progress("cdk", 5, 29, phase="CloudFormation Stack Creation",
                           step="CloudFront Distribution")
        await rec.task_completed("cdk", output={"stack": "web"})

Such a session has owner kind `external`: it is created RUNNING under a token issued
at creation and is never claimed by a worker nor resumed by a cron. Every write is a
fenced store write carrying the token, so another process continues it only with
`SessionRecorder.attach(store, session_id, token)`. The store holds a digest of the
token (`external:<sha256 prefix>`), never the token, so listings and error messages
that show the session's owner do not reveal it.

All tasks are declared when the session starts: the Store protocol creates a session
with its tasks atomically and only adopts later tasks through a task's completion (for
agents that decompose work), which an external loop has no use for.

`StateAPI` offers dict-shaped calls (`save_pipeline_session`,
`update_agent_execution`, `record_metric`) on top of recorders it keeps in-process, so
the tokens never leave the caller's memory; `save_user_project` and `record_download`
write the store's user-project history directly (no session involved).
"""

from __future__ import annotations

from orchestrator.state.recorder import SessionRecorder, external_owner
from orchestrator.state.dict_api import StateAPI, UserProject

__all__ = ["SessionRecorder", "StateAPI", "UserProject", "external_owner"]
