"""`orchestrator ui` on the command line: what it refuses before serving anything."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import cli


def test_a_non_loopback_host_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    result = cli("ui", "--host", "0.0.0.0", "--port", "1", store=f"sqlite://{tmp_path / 's.db'}", tmp=tmp_path,
                 env={"ORCHESTRATOR_UI_TOKEN": ""})
    assert result.code == 2
    assert result.err.startswith("error: --host 0.0.0.0") and "ORCHESTRATOR_UI_TOKEN" in result.err
    assert len(result.err.strip().splitlines()) == 1 and result.out == ""


def test_without_the_ui_extra_the_command_says_which_pip_command_adds_it(tmp_path: Path) -> None:
    # A folder first on the path whose `starlette` cannot be imported: as on an install without the extra.
    shadow = tmp_path / "no_extra" / "starlette"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'starlette'\", "
                                        "name='starlette')\n", encoding="utf-8")
    result = cli("ui", store=f"sqlite://{tmp_path / 's.db'}", tmp=tmp_path,
                 env={"PYTHONPATH": str(tmp_path / "no_extra")})
    assert result.code == 2
    assert result.err.strip() == ("error: `orchestrator ui` needs the ui extra (starlette is not installed): "
                                  "pip install 'durable-orchestrator[ui]'")
