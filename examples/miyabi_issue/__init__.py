"""miyabi issue: a coordinator decomposes an issue into a task DAG at run time.

`python -m examples.miyabi_issue [--no-approve]`
"""

from examples.miyabi_issue.app import ISSUE_FILE, IssueRun, approve, run_example, start
from examples.miyabi_issue.issue import Issue, SubTask, parse_issue
from examples.miyabi_issue.pipeline import build_pipeline, pipeline

__all__ = ["ISSUE_FILE", "Issue", "IssueRun", "SubTask", "approve", "build_pipeline", "parse_issue", "pipeline",
           "run_example", "start"]
