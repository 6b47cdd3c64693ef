"""Running the command line in child processes (kill-and-resume and torchrun tests)."""

from __future__ import annotations

import os
import subprocess
import sys

# One thread per child: several run at once on CI's two cores; warnings would fill stderr.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
BOUNDARYSCOPE = [sys.executable, "-m", "boundaryscope"]
# --standalone: a local rendezvous on a free port; "--" keeps torchrun's parser away from
# the command's own flags (it would take --n for an ambiguous --nnodes/--nproc-per-node).
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", "-m", "boundaryscope", "--"]  # fmt: skip


def run(argv: list[str], launcher: list[str] = BOUNDARYSCOPE) -> subprocess.CompletedProcess[str]:
    """Runs ``launcher + argv`` to the end, output captured."""
    return subprocess.run([*launcher, *argv], env=ENV, capture_output=True, text=True)


def run_ok(argv: list[str], launcher: list[str] = BOUNDARYSCOPE) -> None:
    """`run`, asserting success (the tail of stderr is the failure message)."""
    done = run(argv, launcher)
    assert done.returncode == 0, done.stderr[-2000:]
