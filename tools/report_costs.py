"""Writes the reference passes of every report section (``report/cost_reference.json``).

Runs ``boundaryscope report`` on the shipped MNIST LeNet for each profile with an estimate
(``quick``, ``default``) at the profile's own number of images, one thread, and stores each
section's recorded model passes (``passes`` in ``results.json``) with the seconds it took.
`boundaryscope.report.cost` turns them into estimates for any model. Rerun after changing
what a section computes (≈ 6 min on a 2-core CPU).

Run: ``python tools/report_costs.py [--sections boundary,regions]`` (with ``--sections``, only
those sections are measured and merged into the existing table).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "boundaryscope" / "report" / "cost_reference.json"
PROFILES = {"quick": 64, "default": 1000}


def measure(profile: str, n: int, folder: Path, sections: str | None) -> dict[str, object]:
    """One report of `profile` on `n` images: each section's passes and seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    argv = ["report", "--profile", profile, "--n", str(n), "--out", str(folder / profile)]
    if sections:
        argv += ["--sections", sections]
    done = subprocess.run(
        [sys.executable, "-m", "boundaryscope", *argv], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    sections = json.loads((folder / profile / "results.json").read_text())["sections"]
    return {
        "n": n,
        "sections": {
            name: {
                **result["passes"],
                "seconds_lenet": round(result["seconds_total"], 2),
                # A section whose cost follows what it finds says how (robustness: the
                # evaluator's cascade and the images it attacks).
                **({"cost_model": result["cost_model"]} if "cost_model" in result else {}),
            }
            for name, result in sections.items()
        },
    }


def main() -> None:
    """Measures every profile and writes the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", help="only these sections (comma-separated), merged in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table = {
            profile: measure(profile, n, Path(tmp), args.sections)
            for profile, n in PROFILES.items()
        }
    if args.sections:  # merge the re-measured sections into the existing table
        previous = json.loads(OUT.read_text())
        for profile, measured in table.items():
            previous[profile]["sections"].update(measured["sections"])  # type: ignore[index]
        table = previous
    table["source"] = {  # type: ignore[assignment]
        "model": "zoo:lenet-mnist",
        "data": "mnist5k",
        "threads": 1,
        "command": "python tools/report_costs.py",
    }
    OUT.write_text(json.dumps(table, indent=1) + "\n")
    print(f"-> {OUT}")


if __name__ == "__main__":
    main()
