"""The Store contract suite: every backend (ours or yours) must pass it.

Which invariant is proven on which backend (tests/test_contract_*.py run all of them):

| invariant (DESIGN.md §6)                            | SQLite file | in-process moto | moto server (1 req at a time) |
|-----------------------------------------------------|:-----------:|:---------------:|:-----------------------------:|
| round-trips, fenced writes, classification, waits,  |     yes     |       yes       |              yes              |
| signals, cancel, redrive, listing/paging, metrics,  |             |                 |                               |
| pipelines, add_tasks adoption, 1 MB output, bad     |             |                 |                               |
| input, newer schema refused, each operation's own   |             |                 |                               |
| event and none when refused (`StoreContract`)       |             |                 |                               |
| claims exclusive under contention: threads and      |     yes     |   no (moto is   |              yes              |
| processes, negative control, metrics summed over    |             | not atomic; no  |                               |
| processes, killed owner taken over                  |             | shared state)   |                               |
| (`ConcurrencyContract`)                             |             |                 |                               |
| lost responses retried without double effect, no    |     n/a     |       yes       |              yes              |
| Scan for listing (`DynamoDBContract`)               |             |                 |                               |
| sessions by user / pipeline type: newest first,     |     yes     |       yes       |              yes              |
| each once across pages, bad filters refused         |             |                 |                               |
| (`SessionListingContract`, `.contract_listing`)     |             |                 |                               |
| a page by user / type: index Queries + one          |     n/a     |       yes       |              yes              |
| BatchGetItem, no Scan (`SessionListingDynamoDB...`) |             |                 |                               |
| resource limits (concurrency, rate, leases,         |     yes     |       yes       |              yes              |
| priority waiters) and schedules (`FlowContract`,    |             |                 |                               |
| `.contract_flow`; several processes: tests/         |             |                 |                               |
| test_flow_fleet.py)                                 |             |                 |                               |
| many sessions at once (a map's children) never      |     yes     |       yes       |              yes              |
| overwriting one, batch reads; cached outputs read   |             |                 |                               |
| until expiry only (`ChildContract`, `CacheContract`,|             |                 |                               |
| `.contract_children`)                               |             |                 |                               |
| a direct resume reads, then claims: what lands      |     yes     |       yes       |              yes              |
| between is neither lost nor done twice; a mismatch  |             |                 |                               |
| writes nothing (`ResumeContract`, `.contract_resume`|             |                 |                               |
| run by tests/test_contract_resume.py)               |             |                 |                               |

This repository also runs all three on dynalite (an independent DynamoDB
implementation, concurrent, `transactions=0`; `orchestrator.testing.dynalite`): all pass
but `check()` finding no problem, as dynalite has neither TTL nor PITR.

moto is not atomic under concurrent requests: two conditional writes racing in one
process can both succeed (DESIGN.md §6). That is moto's limit, not the protocol's, so
contention is tested on SQLite and on a moto server serving ONE request at a time
(`orchestrator.testing.moto_server`), never on in-process `mock_aws()`, which also
shares no state between processes. The DynamoDB backends also run with
`transactions=0` (single-item conditional writes only).

Use it by subclassing with a `store` fixture (an initialized store opened with a
`FakeClock`, closed afterwards; `anyio_backend` must be defined):

    class TestMyStore(StoreContract):
        @pytest.fixture
        async def store(self): ...

`ConcurrencyContract` also needs a `store_url` fixture (the URL that opens the same
store in another thread or process) and `DynamoDBContract` a store with
`client_events` (botocore's event emitter). Backend-specific raw access (to plant an
item of a newer schema version) goes through `write_newer_schema_version`; override it
for a third-party backend.
"""

from __future__ import annotations

from orchestrator.testing.contract_base import BIG, LEASE, clock_of, complete, make_session, start
from orchestrator.testing.contract_deadline import DeadlineContract
from orchestrator.testing.contract_events import OperatorEventsContract
from orchestrator.testing.contract_history import HistoryContract
from orchestrator.testing.contract_rules import RulebookContract
from orchestrator.testing.contract_sessions import SessionContract
from orchestrator.testing.contract_tasks import TaskContract

__all__ = [
    "BIG",
    "LEASE",
    "DeadlineContract",
    "HistoryContract",
    "OperatorEventsContract",
    "RulebookContract",
    "SessionContract",
    "StoreContract",
    "TaskContract",
    "clock_of",
    "complete",
    "make_session",
    "start",
]


class StoreContract(SessionContract, TaskContract, HistoryContract, OperatorEventsContract, RulebookContract,
                    DeadlineContract):
    """Single-process behaviour of a whole Store; needs a `store` fixture (see module doc).

    A backend or wrapper that serves one role subclasses that role's contract alone:
    `SessionContract` and `TaskContract` (what a runner needs), `HistoryContract`
    (events, metrics, pipelines, retention), `OperatorEventsContract` (the events operations
    record themselves), `UserProjectContract` (contract_projects).
    `RulebookContract` pins the decisions the backends once took differently;
    `DeadlineContract` that no call is made past its context's deadline.
    """
