"""Telemetry: spans, attributes, events, links and metrics via the OTel SDK's in-memory
exporters; a no-op run without the SDK; the JSON log formatter."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from orchestrator.codec import Secret
from orchestrator.store import Progress
from orchestrator.telemetry import JsonFormatter, LibraryFilter, Telemetry, get_logger


@dataclass
class Otel:
    telemetry: Telemetry
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider), exporter, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_session_and_task_spans_carry_namespaced_attributes(otel: Otel) -> None:
    with otel.telemetry.session_span("s-1", "deploy", resumed=False):
        with otel.telemetry.task_span("s-1", "cdk", "cdk_agent", 2) as task:
            task.set_status_ok()
    spans = {s.name: s for s in otel.spans.get_finished_spans()}
    session, task_span = spans["session deploy"], spans["task cdk"]
    assert dict(session.attributes or {}) == {
        "orchestrator.session.id": "s-1",
        "orchestrator.pipeline": "deploy",
        "orchestrator.resumed": False,
    }
    assert dict(task_span.attributes or {}) == {
        "orchestrator.session.id": "s-1",
        "orchestrator.task.id": "cdk",
        "orchestrator.agent": "cdk_agent",
        "orchestrator.attempt": 2,
    }
    assert task_span.parent is not None and task_span.parent.span_id == session.context.span_id
    assert task_span.status.status_code is StatusCode.OK


def test_retries_are_span_events_and_exceptions_set_error(otel: Otel) -> None:
    with pytest.raises(RuntimeError):
        with otel.telemetry.session_span("s-1", "deploy"):
            with otel.telemetry.task_span("s-1", "cdk", "cdk_agent", 1) as task:
                task.add_event("retry", {"orchestrator.attempt": 1, "error": "throttled"})
                task.record_exception(ValueError("bad input"))
            raise RuntimeError("boom")
    spans = {s.name: s for s in otel.spans.get_finished_spans()}
    task_span = spans["task cdk"]
    assert [e.name for e in task_span.events] == ["retry", "exception"]
    assert task_span.events[0].attributes == {"orchestrator.attempt": 1, "error": "throttled"}
    assert task_span.status.status_code is StatusCode.ERROR
    assert spans["session deploy"].status.status_code is StatusCode.ERROR


def test_resumed_session_links_to_the_stored_trace(otel: Otel) -> None:
    with otel.telemetry.session_span("s-1", "deploy") as first:
        stored = otel.telemetry.inject()
        assert stored == first.inject()
    assert stored["traceparent"].startswith("00-")
    with otel.telemetry.session_span("s-1", "deploy", resumed=True, links_from=stored):
        pass
    original, resumed = otel.spans.get_finished_spans()
    assert resumed.context.trace_id != original.context.trace_id
    (link,) = resumed.links
    assert link.context.trace_id == original.context.trace_id
    assert link.context.span_id == original.context.span_id
    assert (resumed.attributes or {})["orchestrator.resumed"] is True


def test_counters_and_histogram_are_recorded(otel: Otel) -> None:
    otel.telemetry.task_finished("gen", "COMPLETED", 1.5)
    otel.telemetry.task_finished("gen", "FAILED", 0.5)
    otel.telemetry.session_finished("COMPLETED", "deploy")
    data = otel.metrics.get_metrics_data()
    assert data is not None
    points: dict[str, list[Any]] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points[metric.name] = list(metric.data.data_points)
    tasks = {p.attributes["orchestrator.status"]: p.value for p in points["orchestrator.tasks"]}
    assert tasks == {"COMPLETED": 1, "FAILED": 1}
    durations = points["orchestrator.task.duration"]
    assert sum(p.count for p in durations) == 2
    assert sum(p.sum for p in durations) == 2.0
    (sessions,) = points["orchestrator.sessions"]
    assert sessions.value == 1 and sessions.attributes["orchestrator.pipeline"] == "deploy"


def test_telemetry_is_a_no_op_without_the_otel_sdk() -> None:
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        class BlockSdk(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
                    raise ImportError(f"blocked for the test: {name}")
                return None

        sys.meta_path.insert(0, BlockSdk())
        try:
            import opentelemetry.sdk  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("the SDK import was not blocked")

        from orchestrator.telemetry import Telemetry
        t = Telemetry()
        with t.session_span("s-1", "deploy", links_from={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) as s:
            with t.task_span("s-1", "cdk", "cdk_agent", 1) as task:
                task.add_event("retry", {"orchestrator.attempt": 1})
                task.record_exception(ValueError("x"))
                task.set_status_ok()
            assert t.inject() == {} and s.inject() == {}
        t.task_finished("cdk_agent", "COMPLETED", 1.0)
        t.session_finished("COMPLETED")
        assert not any(m.startswith("opentelemetry.sdk") for m in sys.modules)
        print("ok")
        """
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=root,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def _format(record_fn: Any) -> dict[str, Any]:
    logger = logging.getLogger("test.telemetry.json")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        record_fn(logger)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    (record,) = records
    line = JsonFormatter().format(record)
    assert "\n" not in line
    result: dict[str, Any] = json.loads(line)
    return result


def test_json_formatter_matches_the_progress_log_shape() -> None:
    def emit(logger: logging.Logger) -> None:
        log = get_logger(logger.name, session_id="s-1", task_id="task-cdk-deploy-001")
        log.logger = logger
        log.info("Deployment started", extra={"phase": "CloudFormation Stack Creation",
                                              "progress": Progress(5, 29), "stack": "web"})

    out = _format(emit)
    assert out["timestamp"].endswith("Z") and len(out["timestamp"]) == len("2025-11-15T20:00:00.000Z")
    assert out["level"] == "INFO"
    assert out["session_id"] == "s-1"
    assert out["task_id"] == "task-cdk-deploy-001"
    assert out["message"] == "Deployment started"
    assert out["phase"] == "CloudFormation Stack Creation"
    assert out["progress"] == {"current": 5, "total": 29, "percentage": 17}
    assert out["stack"] == "web"


def test_json_formatter_omits_absent_phase_and_redacts_secrets() -> None:
    def emit(logger: logging.Logger) -> None:
        logger.warning("calling %s", "api", extra={"token": Secret("hunter2-secret")})

    out = _format(emit)
    assert out["message"] == "calling api"
    assert out["session_id"] is None and out["task_id"] is None
    assert "phase" not in out and "progress" not in out
    assert out["token"] == "[REDACTED]"


def test_logger_adapter_binds_task_id_on_every_record() -> None:
    def emit(logger: logging.Logger) -> None:
        log = get_logger(logger.name, session_id="s-1").bind(task_id="t-9")
        log.logger = logger
        log.error("failed", extra={"progress": {"current": 29, "total": 29}})

    out = _format(emit)
    assert (out["session_id"], out["task_id"], out["level"]) == ("s-1", "t-9", "ERROR")
    assert out["progress"]["percentage"] == 100


def test_library_filter_drops_aws_libraries_below_warning_and_keeps_everything_else() -> None:
    keep = LibraryFilter()

    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "m", (), None)

    assert not keep.filter(record("botocore.auth", logging.DEBUG))
    assert not keep.filter(record("urllib3.connectionpool", logging.INFO))
    assert not keep.filter(record("pynamodb.connection.base", logging.DEBUG))
    assert keep.filter(record("botocore.credentials", logging.WARNING))
    assert keep.filter(record("orchestrator.scheduler", logging.DEBUG))
    assert keep.filter(record("botocorelike", logging.DEBUG))  # a prefix of a name is not the library
