"""`python -m orchestrator ...`: the command line, without the console script on PATH."""

from orchestrator.cli import main

if __name__ == "__main__":
    main(prog_name="python -m orchestrator")
