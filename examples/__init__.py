"""Runnable examples of the SDK: each is a package with a `run(...)` coroutine and a `__main__`.

    python -m examples.demo                 the tour (`make demo`), under a minute
    python -m examples.t_developer          9-agent app generator (nl request -> project zip)
    python -m examples.miyabi_issue         issue -> task DAG at run time, retry, approval
    python -m examples.deploy_progress      29 shell steps with progress, and the same via the state API
    python -m examples.crash_and_resume     SIGKILL a worker mid-run, resume in another process

Every example uses the store named by `ORCHESTRATOR_STORE` (SQLite or DynamoDB), else
`sqlite:///<repo>/.demo/state.db`. See docs/examples.md.
"""
