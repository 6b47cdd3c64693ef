"""What a report will cost on this model, said before it starts.

Time is model passes (`PassCounter`): ``seconds ≈ forward rows × t_f + backward rows × t_b``
with ``t_f`` and ``t_b`` the measured per-row times of this model on this machine. The
rows each section needs come from a reference table (``cost_reference.json``, written by
``tools/report_costs.py``): the passes every section of each profile made on the shipped
MNIST LeNet, recorded by the report itself (``passes`` in ``results.json``). Sections that
loop over the test images (`Analysis.per_image`) scale with ``n``; the others (sweeps,
Krylov solves, Alg. 4) have fixed sizes, which ``--time-budget`` may shrink (`plan_within`,
`Analysis.scalable`). Models differ in how many passes an attack
takes to converge, so an estimate is a guide (the README states how close it came on the
LeNet and a CIFAR ResNet-18), not a promise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from torch import Tensor

from boundaryscope.classifier import Classifier

__all__ = [
    "PassTimes",
    "budget_summary",
    "estimate_sections",
    "images_within",
    "measure_pass_times",
    "passes_of",
    "plan_within",
    "reference_passes",
    "summary",
]

REFERENCE = Path(__file__).with_name("cost_reference.json")
_CALIBRATION_ROWS = 32
# ``--time-budget`` shrinks the sections' own samples to no less than this share of the
# profile's sizes before it takes test images away: the headline numbers (robustness on
# every test image) come first, the geometry keeps a quarter of its points.
SMALLEST_SCALE = 0.25


@dataclass(frozen=True)
class PassTimes:
    """Measured seconds per row of this model on this machine.

    Attributes:
        forward: One row of a forward pass without gradient.
        backward: One row of a backward pass (the forward that builds its graph excluded).
        rows: Rows per pass the times were measured with.
    """

    forward: float
    backward: float
    rows: int


def measure_pass_times(clf: Classifier, x: Tensor, repeats: int = 2) -> PassTimes:
    """Times one batch of forward and gradient passes of `clf` on (the first rows of) `x`.

    The batch has at most 32 rows and what the memory budget allows; the fastest of
    `repeats` runs after a warm-up counts. The passes are counted in ``clf.counter``.
    """
    x = clf.validate(x)
    rows = min(x.shape[0], _CALIBRATION_ROWS, clf.rows_per_pass(x, grad=True))
    batch = x[:rows]

    def forward() -> None:
        clf.forward_scores(batch)

    def gradient() -> None:
        clf.value_and_gradient(batch, lambda scores: scores.sum(1))

    forward_time = _fastest(forward, repeats) / rows
    gradient_time = _fastest(gradient, repeats) / rows
    return PassTimes(forward_time, max(gradient_time - forward_time, 0.0), rows)


def _fastest(step: Any, repeats: int) -> float:
    step()  # warm-up: allocator, kernels, the first-call checks
    best = float("inf")
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


@cache
def reference_passes() -> dict[str, Any]:
    """The reference table: per profile, its ``n`` and each section's rows (LeNet)."""
    if not REFERENCE.is_file():
        return {}
    return dict(json.loads(REFERENCE.read_text()))


def estimate_sections(
    profile: str,
    names: list[str],
    n: int,
    times: PassTimes,
    work: Callable[[str, int, float], float],
    calibrations: dict[str, float] | None = None,
    scale: float = 1.0,
) -> dict[str, float]:
    """Estimated seconds of each section in `names` with a reference (others are left out).

    A section's reference passes scale by ``work(name, n, scale) / work(name, n_ref, 1)``
    (1 where that is 0 at the reference: nothing to scale by). Where
    the reference splits off a ``cost_model`` — the rows ``"variable"`` whose number
    depends on the model, measured per ``"unit"`` — that part scales instead by this
    model's calibration over the reference's unit: the robustness section's evaluator
    attacks only the images that outlive their minimal perturbation (unit: survivors per
    image, from DeepFool's norms); the regions section's paths need as many anchors as the
    regions are fragmented (unit: rows per path on a few calibration pairs).

    Args:
        profile: The report profile.
        names: Sections to run.
        n: Test images of the run.
        times: `measure_pass_times` of the model.
        work: ``(section, n, scale) ↦`` the work the section does in a report of ``n``
            images of this profile with its own samples at ``scale`` (`Analysis.work`).
        calibrations: Per section, this model's `Analysis.calibrate` on the
            calibration images; absent: as the reference.
        scale: Share of the sections' own samples (`Analysis.settings_for`).
    """
    reference = reference_passes().get(profile)
    if not reference:
        return {}
    out = {}
    for name in names:
        passes = reference["sections"].get(name)
        if passes is None:
            continue
        at_reference = work(name, int(reference["n"]), 1.0)
        share = work(name, n, scale) / at_reference if at_reference > 0 else 1.0
        rows = {key: float(passes[key]) for key in ("forward_rows", "backward_rows")}
        model = passes.get("cost_model")
        if model and calibrations and name in calibrations and model["unit"] > 0:
            ratio = calibrations[name] / model["unit"]
            for key in rows:
                rows[key] += (ratio - 1.0) * float(model["variable"][key])
        seconds = rows["forward_rows"] * times.forward + rows["backward_rows"] * times.backward
        out[name] = share * seconds
    return out


def images_within(budget: float, seconds_at: Callable[[int], float], most: int, fewest: int) -> int:
    """The largest number of test images in ``[fewest, most]`` whose estimate fits `budget`.

    `seconds_at` (the whole report's estimate at ``n`` images, `estimate_sections` summed)
    does not decrease with ``n`` — every section's `Analysis.work` grows or stays
    — so bisection finds the largest fitting ``n`` in ``O(log most)`` evaluations; `fewest`
    when even that does not fit (the sections of fixed size alone exceed the budget).
    """
    if seconds_at(most) <= budget:
        return most
    low, high = fewest, most  # seconds_at(high) > budget throughout
    if low >= high or seconds_at(low) > budget:
        return min(low, most)
    while high - low > 1:
        middle = (low + high) // 2
        if seconds_at(middle) <= budget:
            low = middle
        else:
            high = middle
    return low


def plan_within(
    budget: float,
    seconds_at: Callable[[int, float], float],
    most: int,
    fewest: int,
    smallest_scale: float = SMALLEST_SCALE,
) -> tuple[int, float]:
    """Test images and sample scale of a report that fits `budget` (``--time-budget``).

    The headline numbers are per test image, so the sections' own samples shrink first:
    all `most` test images at the largest scale in ``[smallest_scale, 1]`` (two decimals,
    by bisection) whose estimate fits; where even `smallest_scale` does not fit, that
    scale (1 where it shrinks nothing) and the most test images that fit (`images_within`,
    at least `fewest`).

    Args:
        budget: Seconds.
        seconds_at: ``(n, scale) ↦`` the whole report's estimate; does not decrease in
            either argument (`Analysis.work`, `Analysis.settings_for`).
        most: Test images asked for.
        fewest: Fewest test images to run on.
        smallest_scale: Smallest share of the sections' own samples.

    Returns:
        ``(n, scale)``.
    """
    if seconds_at(most, 1.0) <= budget:
        return most, 1.0
    if seconds_at(most, smallest_scale) > budget:
        n = images_within(budget, lambda n: seconds_at(n, smallest_scale), most, fewest)
        # Sections already at their smallest sizes (the quick profile) have nothing to shrink.
        shrinks = seconds_at(n, smallest_scale) < seconds_at(n, 1.0)
        return n, smallest_scale if shrinks else 1.0
    low, high = round(smallest_scale * 100), 100  # in hundredths; seconds_at(high) > budget
    while high - low > 1:
        middle = (low + high) // 2
        if seconds_at(most, middle / 100) <= budget:
            low = middle
        else:
            high = middle
    return most, low / 100


def budget_summary(
    budget: float, chosen: int, requested: int, scale: float, seconds: float, fixed: float
) -> str:
    """The line printed when ``--time-budget`` sets the test images and the sample scale.

    Args:
        budget: The budget in seconds.
        chosen: Test images the report will use.
        requested: Test images asked for (``--n`` or the profile's).
        scale: Share of the sections' own samples (`plan_within`).
        seconds: The estimate at `chosen` and `scale`.
        fixed: The part of it that does not follow the number of test images.
    """
    if chosen >= requested and scale >= 1.0:
        return (
            f"report: the estimate (about {_duration(seconds)}) fits --time-budget "
            f"{_duration(budget)}: all {requested} test images"
        )
    samples = (
        f", the sections' own samples (training images, boundary points, paths, curve "
        f"images) at {scale:.0%} of the profile's sizes"
        if scale < 1.0
        else ""
    )
    if chosen >= requested:
        return (
            f"report: --time-budget {_duration(budget)}: all {requested} test images"
            f"{samples} (about {_duration(seconds)} estimated)"
        )
    if seconds <= budget:
        return (
            f"report: --time-budget {_duration(budget)}: {chosen} of the {requested} test "
            f"images{samples} (about {_duration(seconds)} estimated, {_duration(fixed)} "
            "of it in work whose size does not follow the images)"
        )
    return (
        f"report: --time-budget {_duration(budget)} cannot be met: the work whose size does "
        f"not follow the test images takes about {_duration(fixed)} alone{samples}; "
        f"running on the fewest, {chosen} test images (about {_duration(seconds)}); "
        "--profile quick or --sections make it shorter"
    )


def summary(
    estimates: dict[str, float], quick: float | None, profile: str, every: bool = False
) -> str:
    """The lines printed before a report starts: total, the costliest sections, advice.

    With `every`, one more line per section (``--estimate-only``: the whole breakdown).
    """
    total = sum(estimates.values())
    top = sorted(estimates.items(), key=lambda item: -item[1])[:4]
    parts = ", ".join(f"{name} {_duration(seconds)}" for name, seconds in top)
    lines = [
        f"report: about {_duration(total)} estimated on this model and machine "
        f"(model passes × measured pass time; {parts})"
    ]
    if total > 3600 and profile != "quick":
        advice = f"--profile quick takes about {_duration(quick)}" if quick else ""
        lines.append(
            "report: this will take hours here; "
            + (f"{advice}; " if advice else "")
            + "--time-budget 1h fits it into an hour (the sections' own samples shrink "
            "first, then the test images); "
            "a GPU (--device cuda) runs the same passes far faster, and the finished "
            "sections are kept (--resume)."
        )
    if every:
        lines += [f"  {name:13s} {_duration(seconds)}" for name, seconds in estimates.items()]
    return "\n".join(lines)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def passes_of(clf: Classifier) -> dict[str, int]:
    """The classifier's pass counts now (to record a section's passes as a difference)."""
    counter = clf.counter
    return {"forward_rows": counter.forward_rows, "backward_rows": counter.backward_rows}
