"""The table as code: its definition, creation, repair and checks, IaC exports and IAM policy.

One definition (`table_definition`) feeds CreateTable, the connection's key metadata,
the CloudFormation and Terraform exports, and `check()`, so they cannot drift apart.

`ensure_table` (`orchestrator init`) creates a missing table, and brings an existing one
to the definition: the indexes added since it was created (GSI3 by user, GSI4 by type:
their keys written on existing sessions first, then UpdateTable, so an interrupted run
is finished by the next), TTL on `ttl`, point-in-time recovery, SSE with the AWS managed
key (an earlier `init` may have been interrupted after CreateTable). It reads before it
writes, so a second run sends no update. A feature the store lacks (a DynamoDB-
compatible store without TTL or PITR) is a logged warning, not a failure; `check()`
names it, with what it costs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio

from orchestrator.errors import SchemaError, StoreError
from orchestrator.store.config import DynamoDBConfig
from orchestrator.store.dynamodb.connection import Caller, DynamoCallError
from orchestrator.store.dynamodb.indexes import ADDED_INDEXES, write_index_keys
from orchestrator.store.dynamodb.models import GSI1, GSI2, GSI3, GSI4

__all__ = [
    "DATA_ACTIONS",
    "SETUP_ACTIONS",
    "check_table",
    "cloudformation",
    "ensure_table",
    "iam_policy",
    "meta_table",
    "table_definition",
    "terraform",
]

log = logging.getLogger("orchestrator.store.dynamodb")

#: Every data-plane action the store calls at run time (no Scan, ever). BatchGetItem reads
#: the sessions a keys-only index (by user, by type) named.
DATA_ACTIONS: tuple[str, ...] = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchWriteItem",
)
#: Actions `initialize()` and `check()` call (TransactWriteItems is authorised per item
#: through PutItem/UpdateItem above; IAM has no action of its own for it). CreateTable
#: sends `Tags`, which IAM authorises as dynamodb:TagResource too (tag on create);
#: UpdateTable turns on SSE of an existing table and adds an index it lacks.
SETUP_ACTIONS: tuple[str, ...] = (
    "dynamodb:CreateTable",
    "dynamodb:TagResource",
    "dynamodb:DescribeTable",
    "dynamodb:UpdateTable",
    "dynamodb:UpdateTimeToLive",
    "dynamodb:DescribeTimeToLive",
    "dynamodb:UpdateContinuousBackups",
    "dynamodb:DescribeContinuousBackups",
)
_ON = ("ENABLED", "ENABLING")
#: SSE states that need no UpdateTable (UPDATING: a change is under way).
_SSE_ON = ("ENABLED", "ENABLING", "UPDATING")
_WAIT_ACTIVE_S = 120.0
_KEYS = {"PK": "HASH", "SK": "RANGE"}
_INDEX_KEYS = {GSI1: {"GSI1PK": "HASH", "GSI1SK": "RANGE"}, GSI2: {"GSI2PK": "HASH", "GSI2SK": "RANGE"},
               GSI3: {"GSI3PK": "HASH", "GSI3SK": "RANGE"}, GSI4: {"GSI4PK": "HASH", "GSI4SK": "RANGE"}}
#: The status and project listings read whole sessions from the index (ALL); the user and type
#: listings read keys (KEYS_ONLY) and then the sessions, so heartbeats never write those indexes.
_PROJECTION = {GSI1: "ALL", GSI2: "ALL", GSI3: "KEYS_ONLY", GSI4: "KEYS_ONLY"}
_WAIT_INDEX_S = 3600.0  # backfilling an index of a large table takes a while


def table_definition(config: DynamoDBConfig) -> dict[str, Any]:
    """CreateTable parameters: PK/SK, GSI1 (status), GSI2 (project), GSI3 (user), GSI4 (type), SSE."""
    provisioned = config.billing_mode == "PROVISIONED"
    throughput = {"ReadCapacityUnits": config.read_capacity, "WriteCapacityUnits": config.write_capacity}
    indexes = []
    for name, keys in _INDEX_KEYS.items():
        index: dict[str, Any] = {
            "IndexName": name,
            "KeySchema": [{"AttributeName": k, "KeyType": t} for k, t in keys.items()],
            "Projection": {"ProjectionType": _PROJECTION[name]},
        }
        if provisioned:
            index["ProvisionedThroughput"] = dict(throughput)
        indexes.append(index)
    attrs = ["PK", "SK", *(k for keys in _INDEX_KEYS.values() for k in keys)]
    definition: dict[str, Any] = {
        "TableName": config.table_name,
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in attrs],
        "KeySchema": [{"AttributeName": k, "KeyType": t} for k, t in _KEYS.items()],
        "GlobalSecondaryIndexes": indexes,
        "BillingMode": config.billing_mode,
        "SSESpecification": {"Enabled": True},
        "DeletionProtectionEnabled": config.deletion_protection,
        "Tags": [{"Key": "orchestrator:schema", "Value": "1"}],
    }
    if provisioned:
        definition["ProvisionedThroughput"] = dict(throughput)
    return definition


def meta_table(config: DynamoDBConfig) -> dict[str, Any]:
    """The DescribeTable-shaped key metadata PynamoDB's connection needs."""
    d = table_definition(config)
    return {
        "TableName": d["TableName"],
        "KeySchema": d["KeySchema"],
        "AttributeDefinitions": d["AttributeDefinitions"],
        "GlobalSecondaryIndexes": [
            {"IndexName": i["IndexName"], "KeySchema": i["KeySchema"]} for i in d["GlobalSecondaryIndexes"]
        ],
    }


def _where(config: DynamoDBConfig) -> str:
    return f"table {config.table_name} in region {config.region}" + (
        f" at endpoint {config.endpoint}" if config.endpoint else ""
    )


def schema_problems(config: DynamoDBConfig, table: dict[str, Any]) -> list[str]:
    """Differences between a DescribeTable answer and the definition, each with its fix."""
    where = _where(config)
    fix = (f"point the store at another table (dynamodb://OTHER_TABLE) and run `orchestrator init`, "
           f"or recreate {config.table_name} from `orchestrator export-iac`")
    problems = []
    keys = {k["AttributeName"]: k["KeyType"] for k in table.get("KeySchema", [])}
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    if keys != _KEYS or any(types.get(k) != "S" for k in _KEYS):
        problems.append(f"{where} has key schema {keys} (types {types}); the SDK needs PK (HASH, S) and "
                        f"SK (RANGE, S): {fix}")
    found = {i["IndexName"]: i for i in table.get("GlobalSecondaryIndexes", [])}
    for name, want in _INDEX_KEYS.items():
        index = found.get(name)
        if index is None:
            if name not in ADDED_INDEXES:
                problems.append(f"{where} has no global secondary index {name} ({', '.join(want)}): {fix}")
            continue
        got = {k["AttributeName"]: k["KeyType"] for k in index.get("KeySchema", [])}
        projection = index.get("Projection", {}).get("ProjectionType")
        if got != want or projection != _PROJECTION[name]:
            problems.append(f"{where} has index {name} with keys {got} and projection {projection}; the SDK "
                            f"needs {want} with projection {_PROJECTION[name]}: {fix}")
    return problems


def missing_indexes(table: dict[str, Any]) -> list[str]:
    """The indexes added since the table was created that it lacks (init adds them)."""
    found = {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])}
    return [name for name in ADDED_INDEXES if name not in found]


async def ensure_table(caller: Caller, config: DynamoDBConfig, *, settings: bool = True) -> None:
    """Create the table if missing (GSIs, SSE, TTL, PITR, deletion protection) and wait until
    ACTIVE; check an existing table's keys and indexes (SchemaError with the fix), then,
    with `settings`, repair its TTL, PITR and SSE where they differ from the definition.

    Without `settings` an existing table costs one DescribeTable: opening a store (each
    worker, Lambda invocation, command) stays off the control plane's TTL and backup APIs,
    as AWS advises; `orchestrator init` repairs the settings.
    """
    table = await _describe(caller, config)
    created = table is None
    if table is None:
        try:
            await caller.call("CreateTable", table_definition(config))
        except DynamoCallError as exc:
            if exc.code != "ResourceInUseException":  # another process created it meanwhile
                raise caller.to_error(exc) from exc
        table = await _wait_active(caller, config)
    elif table.get("TableStatus") == "CREATING":  # another `init` is creating it: wait for it
        table = await _wait_active(caller, config)
    problems = schema_problems(config, table)
    if problems:
        raise SchemaError("; ".join(problems) + f" [table={config.table_name}, op=DescribeTable]",
                          table=config.table_name)
    for name in missing_indexes(table):
        table = await _add_index(caller, config, table, name)
    if not (settings or created):
        return
    await _ensure_ttl(caller, config)
    await _ensure_pitr(caller, config)
    await _ensure_sse(caller, config, table)


async def _describe(caller: Caller, config: DynamoDBConfig) -> dict[str, Any] | None:
    try:
        answer = await caller.call("DescribeTable", {"TableName": config.table_name}, missing_ok=True)
    except DynamoCallError as exc:
        if exc.code == "ResourceNotFoundException":
            return None
        raise caller.to_error(exc) from exc
    table: dict[str, Any] = answer["Table"]
    return table


def _active(table: dict[str, Any]) -> bool:
    return table.get("TableStatus") == "ACTIVE" and all(
        i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in table.get("GlobalSecondaryIndexes", []))


async def _add_index(caller: Caller, config: DynamoDBConfig, table: dict[str, Any], name: str) -> dict[str, Any]:
    """Write the index's keys on the sessions that lack them, then create it (UpdateTable) and wait.

    Keys first: a run interrupted before UpdateTable leaves the index missing, so the next
    `init` writes the rest again; once the index exists every session carries its keys.
    """
    written = await write_index_keys(caller, config, name)
    definition = table_definition(config)
    index = next(i for i in definition["GlobalSecondaryIndexes"] if i["IndexName"] == name)
    # The table's definitions and the new keys: some implementations (moto) replace the list instead of merging.
    attrs = list(table.get("AttributeDefinitions", []))
    attrs += [a for a in definition["AttributeDefinitions"] if a["AttributeName"] in _INDEX_KEYS[name] and a not in attrs]
    params = {"TableName": config.table_name, "AttributeDefinitions": attrs,
              "GlobalSecondaryIndexUpdates": [{"Create": index}]}
    for attempt in range(2):
        try:
            await caller.call("UpdateTable", params, any_error=True)
            break
        except DynamoCallError as exc:
            if exc.code == "ValidationException" and "already exists" in exc.message:  # another init added it
                break
            if exc.code != "ResourceInUseException" or attempt:  # the table is busy with another update
                raise caller.to_error(exc) from exc
            await _wait_active(caller, config, _WAIT_INDEX_S)
    log.info("added index %s to %s (keys written on %d existing sessions)", name, config.table_name, written)
    return await _wait_active(caller, config, _WAIT_INDEX_S)


async def _wait_active(caller: Caller, config: DynamoDBConfig, limit_s: float = _WAIT_ACTIVE_S) -> dict[str, Any]:
    # Real time, not the injected clock: this waits on AWS, not on the SDK's logic time.
    with anyio.move_on_after(limit_s):
        while True:
            table = await _describe(caller, config)
            if table is not None and _active(table):
                return table
            await anyio.sleep(1.0)
    raise StoreError(
        f"{_where(config)} did not become ACTIVE within {limit_s:.0f} s; check it in the AWS "
        f"console and run `orchestrator init` again [table={config.table_name}, op=DescribeTable]",
        table=config.table_name,
    )


#: What a table without the feature costs, for warnings and `check()`.
_WITHOUT = {
    "TTL": "DynamoDB never deletes expired sessions, events and metrics: run `orchestrator purge` from a cron",
    "point-in-time recovery": "the table cannot be restored to an earlier time",
    "server-side encryption": "the table is encrypted with an AWS owned key, not the AWS managed KMS key the "
                              "SDK's definition names",
}


def _lacking(config: DynamoDBConfig, feature: str, exc: DynamoCallError) -> str:
    verb = "read" if exc.op.startswith("Describe") else "enable"
    return (f"{_where(config)}: the store could not {verb} {feature} ({exc.op}: {exc.code}: {exc.message}); "
            f"the SDK works without it, but {_WITHOUT[feature]}")


async def _ttl_description(caller: Caller, config: DynamoDBConfig) -> dict[str, Any]:
    answer = await caller.call("DescribeTimeToLive", {"TableName": config.table_name}, any_error=True)
    desc: dict[str, Any] = answer.get("TimeToLiveDescription", {})
    return desc


async def _ensure_ttl(caller: Caller, config: DynamoDBConfig) -> None:
    spec = {"Enabled": True, "AttributeName": "ttl"}
    try:
        desc = await _ttl_description(caller, config)
        if desc.get("TimeToLiveStatus") in _ON:
            return  # on `ttl`, or on another attribute: `check()` names that, a person decides
        await caller.call("UpdateTimeToLive", {"TableName": config.table_name, "TimeToLiveSpecification": spec},
                          any_error=True)
        log.info("enabled TTL on attribute 'ttl' of %s", config.table_name)
    except DynamoCallError as exc:
        if "already enabled" not in exc.message.lower():
            log.warning("%s", _lacking(config, "TTL", exc))


async def _pitr_status(caller: Caller, config: DynamoDBConfig) -> str | None:
    backups = await caller.call("DescribeContinuousBackups", {"TableName": config.table_name}, any_error=True)
    status: str | None = (backups.get("ContinuousBackupsDescription", {})
                          .get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus"))
    return status


async def _ensure_pitr(caller: Caller, config: DynamoDBConfig) -> None:
    if not config.point_in_time_recovery:
        return
    params = {
        "TableName": config.table_name,
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    }
    try:
        if await _pitr_status(caller, config) in _ON:
            return
        await caller.call("UpdateContinuousBackups", params, any_error=True)
        log.info("enabled point-in-time recovery on %s", config.table_name)
    except DynamoCallError as exc:
        log.warning("%s", _lacking(config, "point-in-time recovery", exc))


async def _ensure_sse(caller: Caller, config: DynamoDBConfig, table: dict[str, Any]) -> None:
    if table.get("SSEDescription", {}).get("Status") in _SSE_ON:
        return
    params = {"TableName": config.table_name, "SSESpecification": {"Enabled": True, "SSEType": "KMS"}}
    try:
        await caller.call("UpdateTable", params, any_error=True)
        log.info("enabled server-side encryption with the AWS managed key on %s", config.table_name)
    except DynamoCallError as exc:
        log.warning("%s", _lacking(config, "server-side encryption", exc))


async def check_table(caller: Caller, config: DynamoDBConfig) -> list[str]:
    """Problems with keys, indexes, TTL, PITR and SSE, each with its fix (or what it costs)."""
    table = await _describe(caller, config)
    if table is None:
        return [f"{_where(config)} does not exist; run `orchestrator init` to create it"]
    problems = schema_problems(config, table)
    for name in missing_indexes(table):
        problems.append(f"{_where(config)} has no index {name} (sessions by {ADDED_INDEXES[name]}), so "
                        f"`orchestrator list` by {ADDED_INDEXES[name]} fails; run `orchestrator init`: it writes the "
                        f"index keys on existing sessions, then adds the index with UpdateTable")
    try:
        desc = await _ttl_description(caller, config)
        if desc.get("TimeToLiveStatus") not in _ON or desc.get("AttributeName") != "ttl":
            problems.append(f"{_where(config)} has TTL {desc.get('TimeToLiveStatus', 'DISABLED')} on "
                            f"{desc.get('AttributeName')!r}; enable TTL on attribute 'ttl' (run `orchestrator "
                            f"init`; a TTL on another attribute must be turned off first) or finished sessions "
                            f"and events are never deleted")
    except DynamoCallError as exc:
        problems.append(_lacking(config, "TTL", exc))
    if config.point_in_time_recovery:
        try:
            pitr = await _pitr_status(caller, config)
            if pitr not in _ON:
                problems.append(f"{_where(config)} has point-in-time recovery {pitr or 'DISABLED'}; run "
                                f"`orchestrator init` to enable it (or add `&pitr=0` to the store URL to go without)")
        except DynamoCallError as exc:
            problems.append(_lacking(config, "point-in-time recovery", exc))
    sse = table.get("SSEDescription", {}).get("Status")
    if sse not in _SSE_ON:
        problems.append(f"{_where(config)} has server-side encryption {sse or 'with an AWS owned key'}; run "
                        f"`orchestrator init` to use the AWS managed KMS key of the SDK's definition")
    return problems


def cloudformation(config: DynamoDBConfig) -> dict[str, Any]:
    """An `AWS::DynamoDB::Table` template for the same definition (TTL and PITR included)."""
    d = table_definition(config)
    props: dict[str, Any] = {
        "TableName": d["TableName"],
        "AttributeDefinitions": d["AttributeDefinitions"],
        "KeySchema": d["KeySchema"],
        "GlobalSecondaryIndexes": d["GlobalSecondaryIndexes"],
        "BillingMode": d["BillingMode"],
        "SSESpecification": {"SSEEnabled": True},
        "TimeToLiveSpecification": {"AttributeName": "ttl", "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": config.point_in_time_recovery},
        "DeletionProtectionEnabled": config.deletion_protection,
        "Tags": d["Tags"],
    }
    if "ProvisionedThroughput" in d:
        props["ProvisionedThroughput"] = d["ProvisionedThroughput"]
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"Durable orchestrator state table {config.table_name}",
        "Resources": {
            "OrchestratorTable": {
                "Type": "AWS::DynamoDB::Table",
                "DeletionPolicy": "Retain",
                "Properties": props,
            }
        },
        "Outputs": {"TableName": {"Value": {"Ref": "OrchestratorTable"}},
                    "TableArn": {"Value": {"Fn::GetAtt": ["OrchestratorTable", "Arn"]}}},
    }


def terraform(config: DynamoDBConfig) -> str:
    """An `aws_dynamodb_table` resource (HCL) for the same definition."""
    d = table_definition(config)
    provisioned = config.billing_mode == "PROVISIONED"
    lines = [
        'resource "aws_dynamodb_table" "orchestrator" {',
        f"  name                        = {json.dumps(d['TableName'])}",
        f"  billing_mode                = {json.dumps(d['BillingMode'])}",
        '  hash_key                    = "PK"',
        '  range_key                   = "SK"',
        f"  deletion_protection_enabled = {str(config.deletion_protection).lower()}",
    ]
    if provisioned:
        lines += [f"  read_capacity               = {config.read_capacity}",
                  f"  write_capacity              = {config.write_capacity}"]
    for attr in d["AttributeDefinitions"]:
        lines += ["", "  attribute {", f"    name = {json.dumps(attr['AttributeName'])}", '    type = "S"', "  }"]
    for index in d["GlobalSecondaryIndexes"]:
        keys = {k["KeyType"]: k["AttributeName"] for k in index["KeySchema"]}
        lines += ["", "  global_secondary_index {", f"    name            = {json.dumps(index['IndexName'])}",
                  f"    hash_key        = {json.dumps(keys['HASH'])}",
                  f"    range_key       = {json.dumps(keys['RANGE'])}",
                  f"    projection_type = {json.dumps(index['Projection']['ProjectionType'])}"]
        if provisioned:
            lines += [f"    read_capacity   = {config.read_capacity}",
                      f"    write_capacity  = {config.write_capacity}"]
        lines.append("  }")
    lines += [
        "", "  ttl {", '    attribute_name = "ttl"', "    enabled        = true", "  }",
        "", "  point_in_time_recovery {", f"    enabled = {str(config.point_in_time_recovery).lower()}", "  }",
        "", "  server_side_encryption {", "    enabled = true", "  }",
        "", "  tags = {", '    "orchestrator:schema" = "1"', "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def iam_policy(config: DynamoDBConfig, *, account_id: str = "*") -> dict[str, Any]:
    """Least-privilege policy: the data actions on the table and its indexes, setup on the table."""
    table_arn = f"arn:aws:dynamodb:{config.region}:{account_id}:table/{config.table_name}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OrchestratorData",
                "Effect": "Allow",
                "Action": list(DATA_ACTIONS),
                "Resource": [table_arn, f"{table_arn}/index/*"],
            },
            {
                "Sid": "OrchestratorSetup",
                "Effect": "Allow",
                "Action": list(SETUP_ACTIONS),
                "Resource": [table_arn],
            },
        ],
    }
