"""The table as code: its definition, creation and checks, IaC exports and IAM policy.

One definition (`table_definition`) feeds CreateTable, the connection's key metadata,
the CloudFormation and Terraform exports, and `check()`, so they cannot drift apart.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio

from orchestrator.errors import SchemaError, StoreError
from orchestrator.store.config import DynamoDBConfig
from orchestrator.store.dynamodb.connection import Caller, DynamoCallError
from orchestrator.store.dynamodb.models import GSI1, GSI2

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

#: Every data-plane action the store calls at run time (no Scan, ever).
DATA_ACTIONS: tuple[str, ...] = (
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchWriteItem",
)
#: Actions `initialize()` and `check()` call (TransactWriteItems is authorised per item
#: through PutItem/UpdateItem above; IAM has no action of its own for it).
SETUP_ACTIONS: tuple[str, ...] = (
    "dynamodb:CreateTable",
    "dynamodb:DescribeTable",
    "dynamodb:UpdateTimeToLive",
    "dynamodb:DescribeTimeToLive",
    "dynamodb:UpdateContinuousBackups",
    "dynamodb:DescribeContinuousBackups",
)
_WAIT_ACTIVE_S = 120.0
#: How a DynamoDB-compatible store (dynalite, ...) says it lacks an operation.
_UNSUPPORTED_CODES = frozenset({"UnknownOperationException"})
_KEYS = {"PK": "HASH", "SK": "RANGE"}
_INDEX_KEYS = {GSI1: {"GSI1PK": "HASH", "GSI1SK": "RANGE"}, GSI2: {"GSI2PK": "HASH", "GSI2SK": "RANGE"}}


def table_definition(config: DynamoDBConfig) -> dict[str, Any]:
    """CreateTable parameters: PK/SK, GSI1 (status) and GSI2 (project), ALL projection, SSE."""
    provisioned = config.billing_mode == "PROVISIONED"
    throughput = {"ReadCapacityUnits": config.read_capacity, "WriteCapacityUnits": config.write_capacity}
    indexes = []
    for name, keys in _INDEX_KEYS.items():
        index: dict[str, Any] = {
            "IndexName": name,
            "KeySchema": [{"AttributeName": k, "KeyType": t} for k, t in keys.items()],
            "Projection": {"ProjectionType": "ALL"},
        }
        if provisioned:
            index["ProvisionedThroughput"] = dict(throughput)
        indexes.append(index)
    attrs = ["PK", "SK", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK"]
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
            problems.append(f"{where} has no global secondary index {name} ({', '.join(want)}): {fix}")
            continue
        got = {k["AttributeName"]: k["KeyType"] for k in index.get("KeySchema", [])}
        projection = index.get("Projection", {}).get("ProjectionType")
        if got != want or projection != "ALL":
            problems.append(f"{where} has index {name} with keys {got} and projection {projection}; the SDK "
                            f"needs {want} with projection ALL: {fix}")
    return problems


async def ensure_table(caller: Caller, config: DynamoDBConfig) -> None:
    """Create the table if missing (GSIs, SSE, TTL, PITR, deletion protection), wait until
    ACTIVE, or check an existing table's keys and indexes (SchemaError with the fix)."""
    table = await _describe(caller, config)
    if table is None:
        try:
            await caller.call("CreateTable", table_definition(config))
        except DynamoCallError as exc:
            if exc.code != "ResourceInUseException":  # another process created it meanwhile
                raise caller.to_error(exc) from exc
        table = await _wait_active(caller, config)
        await _enable_ttl(caller, config)
        await _enable_pitr(caller, config)
    problems = schema_problems(config, table)
    if problems:
        raise SchemaError("; ".join(problems) + f" [table={config.table_name}, op=DescribeTable]",
                          table=config.table_name)


async def _describe(caller: Caller, config: DynamoDBConfig) -> dict[str, Any] | None:
    try:
        answer = await caller.call("DescribeTable", {"TableName": config.table_name}, missing_ok=True)
    except DynamoCallError as exc:
        if exc.code == "ResourceNotFoundException":
            return None
        raise caller.to_error(exc) from exc
    table: dict[str, Any] = answer["Table"]
    return table


async def _wait_active(caller: Caller, config: DynamoDBConfig) -> dict[str, Any]:
    # Real time, not the injected clock: this waits on AWS, not on the SDK's logic time.
    with anyio.move_on_after(_WAIT_ACTIVE_S):
        while True:
            table = await _describe(caller, config)
            if table is not None and table.get("TableStatus") == "ACTIVE" and all(
                i.get("IndexStatus", "ACTIVE") == "ACTIVE" for i in table.get("GlobalSecondaryIndexes", [])
            ):
                return table
            await anyio.sleep(1.0)
    raise StoreError(
        f"{_where(config)} did not become ACTIVE within {_WAIT_ACTIVE_S:.0f} s; check it in the AWS "
        f"console and run `orchestrator init` again [table={config.table_name}, op=DescribeTable]",
        table=config.table_name,
    )


def _unsupported(exc: StoreError) -> bool:
    """Whether the store refused an operation it does not implement (not a failure of ours)."""
    return exc.context.get("code") in _UNSUPPORTED_CODES


async def _enable_ttl(caller: Caller, config: DynamoDBConfig) -> None:
    spec = {"Enabled": True, "AttributeName": "ttl"}
    try:
        await caller.call("UpdateTimeToLive", {"TableName": config.table_name, "TimeToLiveSpecification": spec})
    except DynamoCallError as exc:
        if "already enabled" not in str(exc.message).lower():
            raise caller.to_error(exc) from exc
    except StoreError as exc:
        if not _unsupported(exc):
            raise
        # The table works without TTL; only retention needs it, and `check()` reports it.
        log.warning("%s does not support TTL (UpdateTimeToLive: %s): expired items are never deleted by the "
                    "store (`orchestrator purge` deletes ended sessions)", _where(config), exc.context["code"])


async def _enable_pitr(caller: Caller, config: DynamoDBConfig) -> None:
    if not config.point_in_time_recovery:
        return
    params = {
        "TableName": config.table_name,
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    }
    try:
        await caller.call("UpdateContinuousBackups", params)
    except DynamoCallError as exc:
        # Some DynamoDB-compatible stores lack PITR; the table works without it and
        # `check()` reports it.
        log.warning("could not enable point-in-time recovery on %s: %s", config.table_name, exc.message)
    except StoreError as exc:
        if not _unsupported(exc):
            raise
        log.warning("%s does not support point-in-time recovery (UpdateContinuousBackups: %s); add pitr=0 to "
                    "the store URL to stop asking for it", _where(config), exc.context["code"])


async def check_table(caller: Caller, config: DynamoDBConfig) -> list[str]:
    """Problems with reachability, keys, indexes, TTL and PITR, each with its fix."""
    table = await _describe(caller, config)
    if table is None:
        return [f"{_where(config)} does not exist; run `orchestrator init` to create it"]
    problems = schema_problems(config, table)
    try:
        ttl = await caller.call("DescribeTimeToLive", {"TableName": config.table_name})
        desc = ttl.get("TimeToLiveDescription", {})
        if desc.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING") or desc.get("AttributeName") != "ttl":
            problems.append(f"{_where(config)} has TTL {desc.get('TimeToLiveStatus', 'DISABLED')} on "
                            f"{desc.get('AttributeName')!r}; enable TTL on attribute 'ttl' (run `orchestrator "
                            f"init`) or finished sessions and events are never deleted")
    except DynamoCallError as exc:
        problems.append(f"could not read the TTL setting of {_where(config)}: {exc.message}")
    except StoreError as exc:
        if not _unsupported(exc):
            raise
        problems.append(f"{_where(config)} does not support TTL (DescribeTimeToLive: {exc.context['code']}); "
                        f"finished sessions and events are never deleted by the store")
    if config.point_in_time_recovery:
        try:
            backups = await caller.call("DescribeContinuousBackups", {"TableName": config.table_name})
            pitr = (backups.get("ContinuousBackupsDescription", {})
                    .get("PointInTimeRecoveryDescription", {}).get("PointInTimeRecoveryStatus"))
            if pitr != "ENABLED":
                problems.append(f"{_where(config)} has point-in-time recovery {pitr or 'DISABLED'}; enable it "
                                f"with `aws dynamodb update-continuous-backups --table-name {config.table_name} "
                                f"--point-in-time-recovery-specification PointInTimeRecoveryEnabled=true`")
        except DynamoCallError as exc:
            problems.append(f"could not read point-in-time recovery of {_where(config)}: {exc.message}")
        except StoreError as exc:
            if not _unsupported(exc):
                raise
            problems.append(f"{_where(config)} does not support point-in-time recovery (DescribeContinuousBackups: "
                            f"{exc.context['code']}); use a store that has it, or add pitr=0 to the store URL "
                            f"to run without it")
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
                  f"    range_key       = {json.dumps(keys['RANGE'])}", '    projection_type = "ALL"']
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
