"""Load pipelines named `module:attribute` (like uvicorn's `APP` argument).

The attribute may be a `Pipeline` or a zero-argument callable returning one; dotted
attributes (`pkg.mod:factory.pipeline`) are followed. The current directory goes on
`sys.path` first, so `orchestrator worker --app myapp:pipeline` works from a project
checkout without installing it.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Iterable
from typing import Any

from orchestrator.errors import ConfigError, ValidationError
from orchestrator.graph import Pipeline

__all__ = ["load_pipeline", "load_pipelines"]


def _import(module_name: str, spec: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name != exc.name and not module_name.startswith(f"{exc.name}."):
            # The module exists but one of its own imports is missing: say which.
            raise ConfigError(
                f"app {spec!r}: importing module {module_name!r} failed because it imports {exc.name!r}, "
                f"which is not installed; install it in this environment",
                app=spec,
            ) from exc
        raise ConfigError(
            f"app {spec!r}: module {module_name!r} was not found from {cwd} or sys.path; run the command "
            f"from the directory that holds it, set PYTHONPATH, or install the package",
            app=spec,
        ) from exc
    except Exception as exc:  # the user's module, run at import: any error is the app's, said in one line
        raise ConfigError.app_import_failed(spec, module_name, exc) from exc


def load_pipeline(spec: str) -> Pipeline:
    """The `Pipeline` named by `module:attribute`; ConfigError/ValidationError say what is wrong."""
    module_name, sep, attr_path = spec.strip().partition(":")
    if not sep or not module_name or not attr_path:
        raise ValidationError(
            f"app {spec!r} is not of the form MODULE:ATTRIBUTE (e.g. myapp.pipelines:build)", app=spec
        )
    obj: Any = _import(module_name, spec)
    where = module_name
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            pipelines = [n for n in names if isinstance(getattr(obj, n, None), Pipeline)]
            listed = f" Pipelines it defines: {', '.join(pipelines)}." if pipelines else ""
            raise ConfigError(
                f"app {spec!r}: {where!r} has no attribute {part!r}{hint}.{listed}", app=spec, attribute=part
            )
        obj = getattr(obj, part)
        where = f"{where}.{part}" if where != module_name else f"{module_name}:{part}"
    if not isinstance(obj, Pipeline) and callable(obj):
        try:
            obj = obj()
        except TypeError as exc:
            raise ConfigError(
                f"app {spec!r}: {attr_path!r} is a callable that cannot be called without arguments ({exc}); "
                f"point at a Pipeline or a zero-argument factory",
                app=spec,
            ) from exc
        except Exception as exc:  # the user's factory: its error is the app's, said in one line
            raise ConfigError.app_factory_failed(spec, exc) from exc
    if not isinstance(obj, Pipeline):
        raise ConfigError(
            f"app {spec!r}: {attr_path!r} is a {type(obj).__name__}, not an orchestrator Pipeline (or a "
            f"zero-argument callable returning one)",
            app=spec,
        )
    return obj


def load_pipelines(specs: Iterable[str]) -> list[Pipeline]:
    """Several `module:attribute` specs (comma-separated items allowed), each loaded once."""
    out: list[Pipeline] = []
    for item in specs:
        for spec in item.split(","):
            if spec.strip():
                out.append(load_pipeline(spec))
    if not out:
        raise ValidationError("no pipeline given; pass --app MODULE:ATTRIBUTE (repeatable)")
    return out
