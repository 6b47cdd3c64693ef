"""Runs the registered analyses into ``results.json``, figures and ``report.html``.

Each finished analysis is written to ``results.json`` at once (atomically), so an
interrupted run can continue with ``resume=True``: sections already present for the same
configuration are rendered from the file instead of being recomputed.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import math
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import torch

from boundaryscope import __version__, distributed, memory
from boundaryscope._io import (
    atomic_write,
    dump_json,
    from_jsonable,
    output_lock,
    remove_stale_temporaries,
    to_jsonable,
)
from boundaryscope.attacks.base import unknown_name
from boundaryscope.classifier import Classifier, resolve_device
from boundaryscope.data import load_dataset, told_on_refusal
from boundaryscope.report import cost, figures
from boundaryscope.report import sections as sections_module
from boundaryscope.report.references import Citations
from boundaryscope.report.registry import ANALYSES, PROFILES, ReportContext, Section
from boundaryscope.report.verdict import Verdict, build_verdict
from boundaryscope.zoo import InputSpec, LoadedModel, load_model

__all__ = ["run_report", "write_html"]

_logger = logging.getLogger("boundaryscope")


def run_report(
    model: str = "zoo:lenet-mnist",
    data: str = "mnist5k",
    out: str | Path = "runs/report",
    *,
    arch: str | None = None,
    inputs: InputSpec | None = None,
    n: int | None = None,
    device: str | None = None,
    seed: int = 0,
    profile: str = "default",
    resume: bool = False,
    sections: list[str] | None = None,
    world: distributed.World | None = None,
    estimate_only: bool = False,
    others: Sequence[str] = (),
    time_budget: float | None = None,
) -> Path:
    """Runs the report and returns the path of ``report.html``.

    Args:
        model: Model spec (see `boundaryscope.zoo`).
        data: Data spec (see `boundaryscope.data.load_dataset`); its test split is used.
        out: Output directory.
        arch: Architecture for a bare weights file.
        inputs: Bounds and normalisation stated by the user (`boundaryscope.zoo.InputSpec`).
        n: Number of test samples (overrides the profile).
        device: ``cpu``, ``cuda``, … (default: CUDA when available).
        seed: Seed for every random choice of the analyses.
        profile: ``default`` (minutes on a laptop CPU), ``full`` (paper-scale), ``quick``.
        resume: Reuse sections already in ``out/results.json`` computed for the same
            model, data, n, seed and profile, and with the section's current settings.
        sections: Names of the analyses to run (default: all registered).
        world: The ``torchrun`` processes sharing the work (`boundaryscope.distributed`;
            default: this process alone). Per-image sections run in every process with
            their attack calls sharded; the others are dealt out whole, one process each.
            Every process must call with the same arguments; only rank 0 writes files.
        estimate_only: Print the cost estimate (`boundaryscope.report.cost`) and stop,
            writing nothing; the returned path does not exist then.
        others: Specs of other models of the same input shape (each with its own card's
            bounds and normalisation), compared with `model` where a section measures
            across models (the universal section's cross-model table, Table 4.2).
        time_budget: Seconds the report may take here (``--time-budget``). Where the
            estimate (`boundaryscope.report.cost`) at `n` test images is longer, the
            sections' own samples (`Analysis.scalable`: training images, boundary points,
            paths, curve images) shrink first, to no less than a quarter of the profile's
            sizes, with every test image kept; if that is not enough, the report runs on
            the largest number of test images whose estimate fits (at least 16, every
            section on the same images) — `cost.plan_within`. Both are said before it
            starts and on the page. With `resume`, the plan of the interrupted run is
            kept, so its finished sections are reused.
    """
    world = world or distributed.World()
    if time_budget is not None and not (time_budget > 0 and math.isfinite(time_budget)):
        raise ValueError(
            f"The 'time_budget' parameter must be a positive number of seconds; got "
            f"{time_budget!r}."
        )
    if profile not in PROFILES:
        raise unknown_name("profile", profile, sorted(PROFILES))
    sections_module.load_all()
    ordered = sorted(ANALYSES, key=lambda name: ANALYSES[name].order)
    names = sections or ordered
    for name in names:
        if name not in ANALYSES:  # the first misspelt one, with the closest valid name
            raise unknown_name("a report section", name, ordered)
    config = PROFILES[profile]
    if n is not None:
        config = replace(config, n=n)
    out_dir = Path(out)
    torch.manual_seed(seed)
    loaded = load_model(model, arch=arch, inputs=inputs)
    run_device = resolve_device(device)
    clf = _classifier_of(loaded, run_device)
    dataset = load_dataset(data, "test").subset(config.n)
    with told_on_refusal(data, tuple(dataset.x.shape[1:])):  # before any work
        clf.scores(dataset.x[:1])
    meta = {
        "model": model,
        "data": data,
        "arch": arch,
        **({"inputs": inputs.record()} if inputs is not None else {}),
        "n": len(dataset),
        "seed": seed,
        "profile": profile,
        "config": asdict(config),
        "sections": names,
    }
    if others:
        meta["others"] = list(others)
    ctx = ReportContext(
        clf,
        dataset,
        loaded,
        config,
        seed,
        out_dir,
        data_spec=data,
        profile=profile,
        others={spec: _other_classifier(spec, dataset.x[:1], run_device) for spec in others},
    )
    planned: _CostInputs | None = None
    if time_budget is not None:
        (chosen, scale), planned = _plan_within_budget(ctx, names, time_budget, resume, world)
        meta["time_budget"] = {"seconds": time_budget, "requested_n": len(dataset), "scale": scale}
        ctx = replace(ctx, scale=scale)
        if chosen < len(dataset):
            dataset = dataset.subset(chosen)  # the first `chosen` of the same images
            config = replace(config, n=chosen)
            ctx = replace(ctx, data=dataset, config=config)
            meta.update(n=len(dataset), config=asdict(config))
    if estimate_only:
        if not _estimate(ctx, names, profile, every=True, planned=planned):
            print(f"report: no estimate for --profile {profile} (no reference passes)")
        return out_dir / "report.html"
    with contextlib.ExitStack() as stack:
        if world.is_main:  # only once model and data have loaded; one run per directory
            stack.enter_context(output_lock(out_dir))
            remove_stale_temporaries(out_dir)  # left by a run killed while writing
        results_path = out_dir / "results.json"
        saved = _load_previous(results_path, meta) if resume and world.is_main else {}
        saved = distributed.broadcast_object(_same_settings(saved, profile, ctx.scale), world)
        results: dict[str, Any] = {"meta": meta, "sections": dict(saved)}
        todo = [name for name in names if name not in results["sections"]]
        estimates = _estimate(ctx, todo, profile, planned=planned) if world.is_main and todo else {}
        if estimates:
            results["estimate"] = estimates
        progress = _Progress(
            names, reused=set(saved), show=world.is_main, estimates=estimates.get("sections")
        )
        position = {name: i for i, name in enumerate(names)}

        def record(name: str, section_result: dict[str, Any]) -> None:
            # Round-trip through JSON so that rendering sees exactly what --resume reads.
            results["sections"][name] = from_jsonable(to_jsonable(section_result))
            # In report order whatever the order of computing (whole sections come last
            # under torchrun); sections of an earlier run not asked for now stay in front.
            results["sections"] = dict(
                sorted(results["sections"].items(), key=lambda item: position.get(item[0], -1))
            )
            if world.is_main:
                dump_json(results_path, results)
            progress.done(name, section_result["seconds_total"])

        whole = [name for name in todo if world.active and not ANALYSES[name].per_image]
        for name in todo:
            if name not in whole:
                with distributed.sharding(world):  # its attack calls split over the processes
                    section_result = _compute(name, ctx)
                section_result["passes"] = _all_passes(section_result["passes"], world)
                cost_model = section_result.get("cost_model")
                if cost_model:  # its variable rows were counted per process, as passes
                    cost_model["variable"] = _all_passes(cost_model["variable"], world)
                record(name, section_result)
        for name, section_result in _compute_whole(whole, ctx, world):
            record(name, section_result)
        if not world.is_main:
            return out_dir / "report.html"
        rendered = []
        for name in names:
            section = ANALYSES[name].render(results["sections"][name], out_dir)
            section.anchor = f"s-{name}"
            rendered.append(section)
        verdict = build_verdict(results["sections"], tuple(dataset.x.shape[1:]), data)
        return write_html(out_dir, meta, loaded.card, rendered, verdict=verdict)


def _compute(name: str, ctx: ReportContext) -> dict[str, Any]:
    """Runs the analysis `name`; its result with its time, settings and model passes."""
    analysis = ANALYSES[name]
    _logger.info("running analysis %s", name)
    before = cost.passes_of(ctx.clf)
    start = time.perf_counter()
    section_result = analysis.run(ctx)
    section_result["seconds_total"] = time.perf_counter() - start
    section_result["settings"] = analysis.settings_record(ctx.profile, ctx.scale)
    section_result["passes"] = {k: v - before[k] for k, v in cost.passes_of(ctx.clf).items()}
    return section_result


def _all_passes(passes: dict[str, int], world: distributed.World) -> dict[str, int]:
    """A sharded section's passes summed over the processes (each counted its own share)."""
    if not world.active:
        return passes
    parts = distributed.all_gather_objects(passes, world)
    return {key: sum(int(part[key]) for part in parts) for key in passes}


@dataclass(frozen=True)
class _CostInputs:
    """What an estimate measures on the model: pass times and the sections' calibrations."""

    times: cost.PassTimes
    calibrations: dict[str, float]


def _cost_inputs(ctx: ReportContext, names: list[str]) -> _CostInputs:
    """One calibration batch of passes and each section in `names`' `Analysis.calibrate`."""
    return _CostInputs(cost.measure_pass_times(ctx.clf, ctx.data.x), _calibrations(ctx, names))


def _work_in(profile: str) -> Callable[[str, int, float], float]:
    """``(section, n, scale) ↦`` the work the section does in this profile (`Analysis.work`)."""
    return lambda name, n, scale: ANALYSES[name].work(profile, n, scale)


def _plan_within_budget(
    ctx: ReportContext, names: list[str], budget: float, resume: bool, world: distributed.World
) -> tuple[tuple[int, float], _CostInputs | None]:
    """Test images and sample scale that fit `budget` seconds (rank 0 decides).

    Returns ``(n, scale)`` (`cost.plan_within`) and the cost inputs measured for it
    (``None`` where not measured: other ranks, a resumed run's plan, a profile without
    reference passes).
    """
    requested = len(ctx.data)
    plan, planned = (requested, 1.0), None
    previous = _previous_budget_plan(ctx.out_dir / "results.json", budget) if resume else None
    if world.is_main and previous is not None and previous[0] <= requested:
        plan = previous
        samples = f", the sections' own samples at {plan[1]:.0%}" if plan[1] < 1 else ""
        print(
            f"report: --resume keeps what --time-budget chose: {plan[0]} test images{samples}",
            file=sys.stderr,
        )
    elif world.is_main and ctx.profile in cost.reference_passes() and requested:
        planned = inputs = _cost_inputs(ctx, names)
        work = _work_in(ctx.profile)

        def seconds_at(n: int, scale: float) -> float:
            sections = cost.estimate_sections(
                ctx.profile, names, n, inputs.times, work, inputs.calibrations, scale
            )
            return sum(sections.values())

        fewest = min(_CALIBRATION_IMAGES, requested)
        plan = cost.plan_within(budget, seconds_at, requested, fewest)
        estimate, fixed = seconds_at(*plan), seconds_at(0, plan[1])
        print(
            cost.budget_summary(budget, plan[0], requested, plan[1], estimate, fixed),
            file=sys.stderr,
        )
    elif world.is_main:
        print(
            f"report: --time-budget needs an estimate, which --profile {ctx.profile} has "
            "not; all test images are used",
            file=sys.stderr,
        )
    chosen, scale = distributed.broadcast_object(plan, world)
    return (int(chosen), float(scale)), planned


def _previous_budget_plan(path: Path, budget: float) -> tuple[int, float] | None:
    """Test images and sample scale an earlier run in the same directory chose for `budget`."""
    try:
        meta = json.loads(path.read_text()).get("meta", {})
        chosen, recorded = meta["n"], meta["time_budget"]
        same = float(recorded["seconds"]) == budget
        scale = float(recorded["scale"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    usable = isinstance(chosen, int) and chosen > 0 and 0.0 < scale <= 1.0
    return (chosen, scale) if same and usable else None


def _estimate(
    ctx: ReportContext,
    todo: list[str],
    profile: str,
    every: bool = False,
    planned: _CostInputs | None = None,
) -> dict[str, Any]:
    """Per-section time estimates from a one-batch calibration, printed before the run.

    With `every` (``--estimate-only``), each section's estimate is printed too. `planned`:
    pass times and calibrations already measured (by the time budget), not measured again.

    Empty (and nothing printed) for a profile without reference passes (``full``).
    """
    if profile not in cost.reference_passes() or len(ctx.data) == 0:
        return {}
    planned = planned or _cost_inputs(ctx, todo)
    times, calibrations = planned.times, planned.calibrations
    sections = cost.estimate_sections(
        profile, todo, len(ctx.data), times, _work_in(profile), calibrations, ctx.scale
    )
    quick_n = min(len(ctx.data), int(cost.reference_passes().get("quick", {}).get("n", 0)))
    quick = cost.estimate_sections("quick", todo, quick_n, times, _work_in("quick"), calibrations)
    print(cost.summary(sections, sum(quick.values()) or None, profile, every), file=sys.stderr)
    return {"pass_times": asdict(times), "sections": sections}


_CALIBRATION_IMAGES = 16


def _calibrations(ctx: ReportContext, todo: list[str]) -> dict[str, float]:
    """Each section's `Analysis.calibrate` on the first `_CALIBRATION_IMAGES` test images.

    The robustness section runs DeepFool on them (seconds on a CIFAR ResNet-18 on one CPU
    thread): how many budgets each image outlives decides how much of the evaluator's
    cascade runs; the regions section finds one path per scenario among them, with its
    anchor budget (`cost.estimate_sections`).
    """
    calibration = ctx.data.subset(_CALIBRATION_IMAGES)
    measured = {name: ANALYSES[name].calibrate(ctx, calibration.x, calibration.y) for name in todo}
    return {name: value for name, value in measured.items() if value is not None}


def _compute_whole(
    names: list[str], ctx: ReportContext, world: distributed.World
) -> list[tuple[str, dict[str, Any]]]:
    """The sections `names`, each computed whole by one process, in `names` order.

    Sections whose work is not a loop over the test images (Alg. 4's passes, Lanczos on
    boundary points, paths between pairs) run in one process each, unsharded; they are
    dealt to the processes longest first (`Analysis.weight`), each to the least loaded
    one, and every process receives all results. One process computes them all in turn.
    """
    if not names:
        return []
    load = [0.0] * world.size
    owner: dict[str, int] = {}
    for name in sorted(names, key=lambda n: (-ANALYSES[n].weight, names.index(n))):
        owner[name] = min(range(world.size), key=lambda rank: (load[rank], rank))
        load[owner[name]] += ANALYSES[name].weight
    mine = {name: _compute(name, ctx) for name in names if owner[name] == world.rank}
    merged: dict[str, dict[str, Any]] = {}
    for part in distributed.all_gather_objects(mine, world):
        merged.update(part)
    return [(name, merged[name]) for name in names]


class _Progress:
    """One line per finished section on stderr, even when piped: "[k/n] name done in s".

    The time left is the estimate of the sections still to run (`boundaryscope.report.cost`)
    corrected by how the finished ones compared with theirs (measured / estimated, weighed
    by the share of the estimate they make up, at most 4× either way); without
    estimates, the sections left are assumed to take as long as the finished ones on average.
    """

    def __init__(
        self,
        names: list[str],
        reused: set[str],
        show: bool = True,
        estimates: dict[str, float] | None = None,
    ) -> None:
        self.todo = [name for name in names if name not in reused]
        self.seconds: list[float] = []
        self.finished: list[str] = []
        self.estimates = estimates or {}
        self.show = show
        if show and reused & set(names):
            print(
                f"report: reusing {len(reused & set(names))} finished section(s) of "
                f"results.json; {len(self.todo)} to compute",
                file=sys.stderr,
                flush=True,
            )

    def done(self, name: str, seconds: float) -> None:
        """Prints the line of the section `name`, finished in `seconds`."""
        self.seconds.append(seconds)
        self.finished.append(name)
        k, n = len(self.seconds), len(self.todo)
        if not self.show:
            return
        left = self.seconds_left()
        estimate = f"; about {left:.0f} s left" if left is not None else ""
        print(f"[{k}/{n}] {name} done in {seconds:.1f} s{estimate}", file=sys.stderr, flush=True)

    def seconds_left(self) -> float | None:
        """Time the sections still to run should take; ``None`` when none is left."""
        remaining = [name for name in self.todo if name not in self.finished]
        if not remaining:
            return None
        known = [name for name in remaining if name in self.estimates]
        if not self.estimates or len(known) < len(remaining):
            return sum(self.seconds) / len(self.seconds) * len(remaining)
        estimated_done = sum(self.estimates.get(name, 0.0) for name in self.finished)
        estimated_left = sum(self.estimates[name] for name in remaining)
        ratio = sum(self.seconds) / estimated_done if estimated_done > 0 else 1.0
        # Trust the correction as far as the sections behind it weigh in the estimate: one
        # small section that ran long should not multiply the whole forecast.
        weight = estimated_done / max(estimated_done + estimated_left, 1e-30)
        ratio = min(max(1.0 + (ratio - 1.0) * weight, 0.25), 4.0)
        return ratio * estimated_left


def _classifier_of(loaded: LoadedModel, device: torch.device) -> Classifier:
    """The classifier of a loaded model on `device`, with its card's box and normalisation."""
    return Classifier(
        loaded.module.to(device),
        bounds=loaded.bounds,
        preprocessing=loaded.preprocessing,
        device=device,
    )


def _other_classifier(spec: str, probe: torch.Tensor, device: torch.device) -> Classifier:
    """The classifier of an ``--other`` model, checked to take the report's images."""
    clf = _classifier_of(load_model(spec), device)
    try:
        clf.predict(probe)
    except (RuntimeError, ValueError) as error:
        raise ValueError(
            f"--other {spec!r} cannot classify the report's images of shape "
            f"{tuple(probe.shape[1:])}: {error}"
        ) from None
    return clf


def _same_settings(saved: dict[str, Any], profile: str, scale: float) -> dict[str, Any]:
    """The saved sections computed with the settings their analysis has now (at `scale`).

    A section's settings live in its module (`Analysis.settings`) and are stored with its
    result; one whose settings changed since (another version, an edited profile) is
    recomputed rather than shown under settings it was not computed with.
    """
    kept = {}
    for name, result in saved.items():
        now = ANALYSES[name].settings_record(profile, scale) if name in ANALYSES else None
        if now is not None and result.get("settings") != now:
            _logger.warning("section %s was computed with other settings; recomputing", name)
            continue
        kept[name] = result
    return kept


def _load_previous(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        previous = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"--resume: {path} is not valid JSON ({error}); delete it or run without --resume."
        ) from None
    if not isinstance(previous, dict):
        raise ValueError(f"--resume: {path} is not a boundaryscope results file.")

    def setup(m: dict[str, Any]) -> dict[str, Any]:
        # The list of sections may change between runs: finished ones are still reused.
        return {k: v for k, v in m.items() if k != "sections"}

    if setup(previous.get("meta", {})) != setup(json.loads(json.dumps(meta))):
        _logger.warning("results.json was made with another configuration; recomputing")
        return {}
    stored = previous.get("sections", {})
    if not isinstance(stored, dict):
        _logger.warning("%s holds no sections object; recomputing every section", path)
        return {}
    return {
        name: from_jsonable(result)
        for name, result in stored.items()
        if name in ANALYSES and _usable(name, result, path)
    }


def _usable(name: str, stored: Any, path: Path) -> bool:
    """Whether a section read back from `path` may be shown: schema, then a trial render.

    A results file is data that may have been edited or crafted: a result that does not
    satisfy its analysis's schema (an accuracy of 7.5, a "nan" where a count belongs, a
    missing key) or that its renderer cannot draw is recomputed, with a warning naming
    the section and what is wrong — never shown, never a traceback.
    """
    analysis = ANALYSES[name]
    problem = analysis.problem(stored)
    if problem is None:
        with tempfile.TemporaryDirectory() as scratch:
            try:
                analysis.render(from_jsonable(stored), Path(scratch))
            except Exception as error:  # a crafted result may break a renderer anywhere
                problem = f"cannot be drawn ({type(error).__name__}: {str(error)[:120]})"
            finally:
                figures.plt.close("all")
    if problem is not None:
        _logger.warning(
            "section %s in %s is not a valid result (%s); recomputing", name, path, problem
        )
        return False
    return True


def write_html(
    out_dir: Path,
    meta: dict[str, Any],
    card: dict[str, Any],
    sections: list[Section],
    title: str = "Robustness report",
    *,
    verdict: Verdict | None = None,
) -> Path:
    """Renders `sections` into ``out_dir/report.html`` (atomically) and returns its path.

    The page is self-contained: every figure is embedded as a ``data:`` URI, so it
    survives being mailed or uploaded as a CI artefact; the PNG files and
    ``results.json`` stay in `out_dir` beside it. Citation markers (``[[thesis, §3.2]]``)
    in intros, captions and notes become links to a bibliography of the works cited.
    """
    citations = Citations()

    def embed(file: str) -> str:
        data = base64.b64encode((out_dir / file).read_bytes()).decode("ascii")
        return f"data:image/png;base64,{data}"

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("boundaryscope", "report/templates"),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "j2"), default_for_string=True
        ),
    )
    env.filters["embed"] = embed
    env.filters["cite"] = lambda text: markupsafe.Markup(citations.link(str(text)))
    # Table cells and headers hold data too (a model's name): unknown markers stay text.
    env.filters["cite_plain"] = lambda text: citations.plain(str(text))
    env.filters["cite_cell"] = lambda text: markupsafe.Markup(citations.link(str(text), False))
    env.globals["citations"] = citations
    html = env.get_template("report.html.j2").render(
        title=title,
        verdict=verdict,
        meta=meta,
        card=card,
        sections=sections,
        version=__version__,
        torch_version=torch.__version__,
        python=platform.python_version(),
        memory_budget=f"{memory.budget() / 2**30:.2g} GiB"
        + ("" if memory.pass_rows() is None else f", at most {memory.pass_rows()} rows per pass"),
        created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    path = out_dir / "report.html"
    atomic_write(path, lambda handle: handle.write(html.encode()))
    return path
