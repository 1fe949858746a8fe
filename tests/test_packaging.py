"""The wheel installs one top-level package, `orchestrator`, so it installs next to the
OpenAI Agents SDK (`openai-agents`, import name `agents`) and both import.

Builds the wheel from this checkout and installs it with `openai-agents` from PyPI into
a fresh venv (pip's cache makes repeated runs quick).
"""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    (found,) = out.glob("durable_orchestrator-*.whl")
    return found


def test_the_wheel_holds_one_top_level_package_with_the_agent_api_inside(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"orchestrator"}
    assert {"orchestrator/agents/__init__.py", "orchestrator/agents/py.typed"} <= set(names)


@pytest.mark.timeout(600)
def test_the_sdk_and_openai_agents_install_and_import_in_one_venv(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel),
                    "openai-agents"], check=True, capture_output=True, timeout=540)
    probe = (
        "import agents, orchestrator, orchestrator.agents as ours\n"
        "from agents import Agent, Runner\n"  # the OpenAI Agents SDK's own names
        "from orchestrator.agents import agent, AgentContext\n"
        "from orchestrator import Pipeline\n"
        "assert 'site-packages' in agents.__file__ and 'orchestrator' not in agents.__file__\n"
        "@agent\n"
        "def hello(ctx: AgentContext) -> str:\n"
        "    return 'hi'\n"
        "Pipeline('p', agents=[hello]).task('t', 'hello').validate()\n"
        "print(Agent.__module__, ours.__name__)\n"
    )
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["agents.agent", "orchestrator.agents"]
