"""Issue 20's figures from one run: the live-call benchmarks one after another, with the
machine's load average before and after each, their tables written into the document.

    .venv/bin/python -m bench.live_calls            # full run (about 25 minutes), updates the doc
    .venv/bin/python -m bench.live_calls --quick    # each in its smoke mode (a few minutes)

In order: ``bench.slow_clients`` (point 2), ``bench.realtime_flood`` (point 3), ``bench.load
--mixed`` (point 4, with the runtime before the CPU reserve as its baseline row),
``bench.nonspeech`` and ``bench.turns`` (point 5; the turns section holds the VAD's CPU cost per
session). Each runs in its own process and writes its own section; this one writes the
``live-calls`` section: which ran, when, how long, and the load average (1, 5, 15 min) around
each — the machine's load is stated next to the figures, since on a shared machine it moves
them. ``--quick`` passes ``--smoke`` to each (tiny sizes, not a measurement: it checks that the
whole run works). A benchmark that fails is reported and the others still run; the exit status
is then 1.

The artifact: the demo model as committed at the mixed-load baseline (``git archive``), for
every benchmark that takes one: the baselines' runtimes predate the manifest's reference clips
(the quality gate, issue 19) and refuse today's manifest; the model itself is the same file, and
an artifact without reference clips skips the gate. ``--artifact DIR`` uses another.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    REPO,
    BenchError,
    base_parser,
    finish,
    machine_facts,
    main_wrapper,
    markdown_table,
    progress,
)

SECTION = "live-calls"
# The runtime before the CPU reserve and the short-request class (issue 20.4's last step).
MIXED_BASELINE = "e6cfc1f"


ARTIFACT = "examples/models/demo"


@dataclass(frozen=True)
class Step:
    point: str
    module: str
    args: tuple[str, ...] = ()
    takes_artifact: bool = True


STEPS = (
    Step("2 slow clients", "bench.slow_clients"),
    Step("3 bounded sessions", "bench.realtime_flood"),
    Step("4 live audio first", "bench.load", ("--mixed", "--baseline-ref", MIXED_BASELINE)),
    Step("5 one VAD: non-speech", "bench.nonspeech"),
    Step("5 one VAD: turns and VAD cost", "bench.turns", takes_artifact=False),
)


@dataclass
class Ran:
    step: Step
    status: int
    seconds: float
    load_before: str
    load_after: str


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def baseline_artifact(dest: Path) -> Path:
    """The demo artifact as committed at :data:`MIXED_BASELINE`, extracted under ``dest``."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", MIXED_BASELINE, ARTIFACT],
        cwd=REPO,
        capture_output=True,
        check=False,
    )
    if archive.returncode:
        raise BenchError(f"git archive {MIXED_BASELINE} {ARTIFACT}: {archive.stderr.decode()}")
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / ARTIFACT


def run_step(step: Step, args: argparse.Namespace) -> Ran:
    command = [sys.executable, "-m", step.module, *step.args, "--doc", str(args.doc)]
    command += ["--artifact", str(args.artifact)] if step.takes_artifact else []
    command += ["--smoke"] if args.quick else []
    command += ["--no-doc"] if args.no_doc else []
    before = _load()
    progress(f"{step.point}: {' '.join(command[1:])} (load average {before})")
    started = time.monotonic()
    status = subprocess.run(command, check=False).returncode
    seconds = time.monotonic() - started
    after = _load()
    progress(f"{step.point}: exit {status} after {seconds:.0f} s (load average {after})")
    return Ran(step, status, seconds, before, after)


def run(argv: Sequence[str] | None) -> int:
    parser = base_parser(__doc__.splitlines()[0] if __doc__ else "live-call benchmarks")
    parser.add_argument(
        "--quick", action="store_true", help="each benchmark in its smoke mode (not a measurement)"
    )
    parser.add_argument(
        "--artifact",
        type=Path,
        help=f"model artifact directory (default: {ARTIFACT} as of {MIXED_BASELINE})",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.quick = True
    started = time.monotonic()
    load_before = _load()
    artifact = f"`{args.artifact}`"
    with tempfile.TemporaryDirectory(prefix="kubescribe-live-calls-") as tmp:
        if args.artifact is None:
            args.artifact = baseline_artifact(Path(tmp))
            artifact = f"`{ARTIFACT}` as committed at `{MIXED_BASELINE}` (a temporary copy)"
        ran = [run_step(step, args) for step in STEPS]
    total = time.monotonic() - started
    rows = [
        [
            r.step.point,
            f"`python -m {r.step.module}{''.join(' ' + a for a in r.step.args)}`",
            "ok" if r.status == 0 else f"**failed (exit {r.status})**",
            f"{r.seconds:.0f}",
            f"{r.load_before} → {r.load_after}",
        ]
        for r in ran
    ]
    mode = "quick (each in its smoke mode: not a measurement)" if args.quick else "full"
    body = "\n\n".join(
        [
            f"Run: {mode}; one command, `python -m bench.live_calls`, {total / 60:.1f} minutes; "
            f"load average (1, 5, 15 min) {load_before} before, {_load()} after. The sections "
            "of issue 20's points 2–5 below (slow clients, realtime flood, mixed load, silence "
            "and noise, turns) come from this run; each states the load around its own rows. "
            f"Artifact: {artifact}.",
            "\n".join(machine_facts(None, ("onnxruntime", "gunicorn"))),
            markdown_table(
                ["issue 20 point", "benchmark", "result", "seconds", "load average before → after"],
                rows,
            ),
        ]
    )
    finish(args, SECTION, "Live calls, one run (`python -m bench.live_calls`)", body)
    return 0 if all(r.status == 0 for r in ran) else 1


main = main_wrapper(run)

if __name__ == "__main__":
    raise SystemExit(main())
