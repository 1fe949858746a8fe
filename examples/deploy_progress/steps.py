"""The 29 steps of a CDK-style deploy ("[5/29] CloudFormation Stack Creation").

Each step is a real shell command that prints `[n/29] <phase>: <step>` and touches
`<out>/step-NN.done`, standing in for `cdk deploy` output.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["STEPS", "TOTAL", "Step", "shell_argv"]


@dataclass(frozen=True, slots=True)
class Step:
    number: int
    phase: str
    name: str

    @property
    def task_id(self) -> str:
        return f"step-{self.number:02d}"


_PLAN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Synth", ("cdk synth", "Asset bundling", "Template validation")),
    ("Bootstrap", ("CDKToolkit stack", "Staging bucket", "Asset publishing")),
    ("CloudFormation Stack Creation", (
        "VPC", "Public subnets", "Private subnets", "NAT gateway", "Security groups", "IAM roles",
        "DynamoDB table", "S3 bucket", "Lambda functions", "API Gateway", "Cognito user pool",
        "CloudFront Origin Access Control", "CloudFront Distribution", "Route 53 records",
        "ACM certificate", "CloudWatch alarms",
    )),
    ("Deploy assets", ("Upload web bundle", "Invalidate CloudFront cache", "Publish API schema")),
    ("Verification", ("Health check", "Smoke tests", "Stack outputs", "Notify")),
)

STEPS: tuple[Step, ...] = tuple(
    Step(i, phase, name)
    for i, (phase, name) in enumerate(((p, n) for p, names in _PLAN for n in names), start=1)
)
TOTAL = len(STEPS)



def shell_argv(step: Step, out_dir: str, seconds: float = 0.0) -> list[str]:
    """`sh -c` printing the progress line, working `seconds`, touching the step's marker ($1)."""
    script = (
        f'echo "[{step.number}/{TOTAL}] {step.phase}: {step.name}"; sleep "$2"; '
        f'mkdir -p "$1" && touch "$1/{step.task_id}.done"'
    )
    return ["sh", "-c", script, "sh", out_dir, f"{seconds:g}"]
