"""The `orchestrator` command line: thin commands over the public API (typer + rich).

Only this package imports typer and rich. One module per command group: `admin`
(init, doctor, purge, export-iac, iam-policy), `running` (run, submit, resume, fork,
worker, resume-failed), `inspect` (status, list, events, graph, metrics),
`control` (signal, approve, reject, cancel), `flow` (limits, schedule) and `dashboard` (ui: the web dashboard of
`orchestrator.ui`, imported only when it runs). `main()` maps SDK errors to exit codes.
"""

from __future__ import annotations

import sys
from importlib.metadata import version as package_version
from typing import Annotated

import typer

from orchestrator.cli import admin, control, dashboard, flow, inspect, running
from orchestrator.cli._common import Globals, err_console, exit_code_for, operational_error, setup_logging

__all__ = ["app", "main"]

_EPILOG = (
    "Store: --store URL, else $ORCHESTRATOR_STORE, else SQLite in $XDG_STATE_HOME/orchestrator/state.db. "
    "URLs: sqlite:///path/state.db, dynamodb://TABLE?region=REGION[&endpoint=URL]. "
    "Exit codes: 0 ok; 1 a run/resume ended FAILED, a sweep had a failed resume, or doctor found problems; "
    "2 usage or bad input; 3 not found; 4 conflict (claim rejected, lease held, wrong state); "
    "5 store unavailable or unusable; 6 a run/resume stopped WAITING for a signal or approval."
)

app = typer.Typer(
    name="orchestrator",
    help="Durable agent pipelines: run, resume, inspect and operate sessions stored in SQLite or DynamoDB.",
    epilog=_EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        print(f"orchestrator {package_version('durable-orchestrator')}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    store: Annotated[str | None, typer.Option("--store", metavar="URL", help="Store URL (overrides "
                                              "$ORCHESTRATOR_STORE).")] = None,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json (one object per line, on "
                                            "stderr).")] = "text",
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")] = "WARNING",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Say which store each command uses (on "
                                          "stderr).")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the installed version and exit.")] = False,
) -> None:
    setup_logging(log_format, log_level)
    ctx.obj = Globals(store=store, log_format=log_format, log_level=log_level, verbose=verbose)


admin.register(app)
running.register(app)
inspect.register(app)
control.register(app)
dashboard.register(app)
flow.register(app)


def main(argv: list[str] | None = None, *, prog_name: str = "orchestrator") -> None:
    """Console-script entry point: the one place errors are rendered.

    An operational error (one of `orchestrator.errors`, alone or in an ExceptionGroup of
    them) prints one `error:` line on stderr, unwrapped, and exits with its code. Anything
    else is a bug and keeps its traceback.
    """
    try:
        app(args=argv, prog_name=prog_name)
    except KeyboardInterrupt:
        err_console.print("interrupted", highlight=False)
        sys.exit(130)
    except BaseException as exc:
        error = operational_error(exc)
        if error is None:
            raise
        err_console.print(f"error: {error}", style="red", highlight=False, markup=False, soft_wrap=True)
        sys.exit(exit_code_for(error))


if __name__ == "__main__":
    main()
