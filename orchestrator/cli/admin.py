"""Commands about the store itself: init, doctor, purge, export-iac, iam-policy."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Any

import typer

from orchestrator.cli._common import (
    EXIT_FAILED,
    console,
    emit_json,
    err_console,
    globals_of,
    open_cli_store,
    run_async,
    store_config,
)
from orchestrator.durations import parse_duration
from orchestrator.errors import ConfigError, ValidationError
from orchestrator.store import DynamoDBConfig, PurgeReport, StoreDescription

__all__ = ["register"]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
BillingOpt = Annotated[str | None, typer.Option("--billing-mode", help="PAY_PER_REQUEST (default) or "
                                                "PROVISIONED (DynamoDB).")]
PitrOpt = Annotated[bool | None, typer.Option("--pitr/--no-pitr", help="Point-in-time recovery (DynamoDB; "
                                              "default on).")]
DeletionOpt = Annotated[bool | None, typer.Option("--deletion-protection/--no-deletion-protection",
                                                  help="Deletion protection (DynamoDB; use it in "
                                                  "production).")]
PrefixOpt = Annotated[str | None, typer.Option("--table-prefix", help="Table-name prefix per environment, "
                                               "e.g. t-developer-prod- (DynamoDB).")]


def _overrides(billing_mode: str | None, pitr: bool | None, deletion: bool | None,
               prefix: str | None) -> dict[str, Any]:
    if billing_mode is not None and billing_mode.upper() not in ("PAY_PER_REQUEST", "PROVISIONED"):
        raise ValidationError(f"--billing-mode {billing_mode!r}: use PAY_PER_REQUEST or PROVISIONED")
    return {"billing_mode": billing_mode.upper() if billing_mode else None, "point_in_time_recovery": pitr,
            "deletion_protection": deletion, "table_prefix": prefix}


def init_cmd(
    ctx: typer.Context,
    billing_mode: BillingOpt = None,
    pitr: PitrOpt = None,
    deletion_protection: DeletionOpt = None,
    table_prefix: PrefixOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create the SQLite file or the DynamoDB table (GSIs, TTL, PITR, SSE); safe to run again."""
    g = globals_of(ctx)
    overrides = _overrides(billing_mode, pitr, deletion_protection, table_prefix)
    if store_config(g).dynamodb is None and any(v is not None for v in overrides.values()):
        err_console.print("note: --billing-mode/--pitr/--deletion-protection/--table-prefix apply to DynamoDB "
                          "only; ignored for SQLite", highlight=False)

    async def go() -> tuple[StoreDescription, list[str]]:
        async with open_cli_store(g, initialize=False, **overrides) as store:
            await store.provision()
            return store.describe(), await store.check()

    where, problems = run_async(go)
    if as_json:
        emit_json({"store": str(where), "backend": where.backend, "location": where.location,
                   "problems": problems})
    else:
        console.print(f"store ready: {where}", highlight=False)
        for problem in problems:
            console.print(f"  warning: {problem}", style="yellow", highlight=False)


def doctor_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Check the store: connectivity, schema, TTL, indexes; prints what to fix, exit 1 if anything."""
    g = globals_of(ctx)

    async def go() -> tuple[StoreDescription, list[str]]:
        async with open_cli_store(g, initialize=False, read_only=True) as store:
            return store.describe(), await store.check()

    where, problems = run_async(go)
    if as_json:
        emit_json({"store": str(where), "backend": where.backend, "location": where.location,
                   "region": where.region, "endpoint": where.endpoint, "ok": not problems, "problems": problems})
    else:
        console.print(f"store: {where}", highlight=False)
        if not problems:
            console.print("ok: reachable, schema, TTL and indexes as expected", style="green", highlight=False)
        for problem in problems:
            console.print(f"problem: {problem}", style="red", highlight=False)
    if problems:
        raise typer.Exit(EXIT_FAILED)


def purge_cmd(
    ctx: typer.Context,
    older_than: Annotated[str, typer.Option("--older-than", help="Delete sessions that ended longer ago "
                                            "than this, e.g. 90d.")] = "90d",
    as_json: JsonOpt = False,
) -> None:
    """Delete sessions that ended before the bound, and expired events and metrics."""
    g = globals_of(ctx)
    seconds = parse_duration(older_than, what="--older-than")

    async def go() -> PurgeReport:
        async with open_cli_store(g) as store:
            return await store.purge(ended_before=store.clock.now() - seconds)

    report = run_async(go)
    if as_json:
        emit_json(report)
    else:
        console.print(f"purged {report.sessions} session(s) ({report.items} item(s)) that ended more than "
                      f"{older_than} ago", highlight=False)


def _table_config(g: Any, table: str | None, region: str | None, overrides: dict[str, Any]) -> DynamoDBConfig:
    from dataclasses import replace

    if table is not None:
        config = DynamoDBConfig(table=table, region=region or os.environ.get("AWS_REGION")
                                or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                                table_prefix=os.environ.get("ORCHESTRATOR_TABLE_PREFIX", ""))
    else:
        dynamodb = store_config(g).dynamodb
        if dynamodb is None:
            raise ConfigError("the store is SQLite; name the table with --table NAME or pass "
                              "--store dynamodb://TABLE?region=REGION")
        config = dynamodb if region is None else replace(dynamodb, region=region)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(config, **changes) if changes else config


def export_iac_cmd(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", "-f", help="cloudformation (JSON) or terraform (HCL).")]
    = "cloudformation",
    table: Annotated[str | None, typer.Option("--table", help="Table name (default: from --store).")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS region.")] = None,
    billing_mode: BillingOpt = None,
    pitr: PitrOpt = None,
    deletion_protection: DeletionOpt = None,
    table_prefix: PrefixOpt = None,
) -> None:
    """Print the DynamoDB table definition as CloudFormation or Terraform (no AWS access needed)."""
    from orchestrator.store.dynamodb import cloudformation, terraform

    config = _table_config(globals_of(ctx), table, region,
                           _overrides(billing_mode, pitr, deletion_protection, table_prefix))
    if fmt == "cloudformation":
        sys.stdout.write(json.dumps(cloudformation(config), indent=2) + "\n")
    elif fmt == "terraform":
        sys.stdout.write(terraform(config))
    else:
        raise ValidationError(f"--format {fmt!r} is not supported; use cloudformation or terraform")


def iam_policy_cmd(
    ctx: typer.Context,
    table: Annotated[str | None, typer.Option("--table", help="Table name (default: from --store).")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS region.")] = None,
    account_id: Annotated[str, typer.Option("--account-id", help="AWS account id in the ARNs.")] = "*",
    table_prefix: PrefixOpt = None,
) -> None:
    """Print the least-privilege IAM policy for exactly the DynamoDB calls the SDK makes."""
    from orchestrator.store.dynamodb import iam_policy

    config = _table_config(globals_of(ctx), table, region, _overrides(None, None, None, table_prefix))
    sys.stdout.write(json.dumps(iam_policy(config, account_id=account_id), indent=2) + "\n")


def register(app: typer.Typer) -> None:
    app.command("init")(init_cmd)
    app.command("doctor")(doctor_cmd)
    app.command("purge")(purge_cmd)
    app.command("export-iac")(export_iac_cmd)
    app.command("iam-policy")(iam_policy_cmd)
