"""One consistent command line: registry, attack names, --out, --steps, fractions, help."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import pytest
import torch

from boundaryscope._numbers import parse_number
from boundaryscope.attacks import ATTACKS, PGD, AttackResult, DeepFool
from boundaryscope.cli import _build_parser, main
from boundaryscope.cli.attack import ATTACK_NAMES, attack_name
from boundaryscope.cli.registry import COMMAND_MODULES, COMMANDS, load_commands
from boundaryscope.curves import CURVE_ATTACKS, fooling_curves, parse_epsilons
from boundaryscope.zoo import build, parse_arch


def test_every_command_module_registers_its_command():
    commands = load_commands()
    assert list(commands) == list(COMMAND_MODULES)
    sharded = {name for name, c in COMMANDS.items() if c.sharded}
    assert sharded == {"attack", "curves", "noise", "report", "universal"}


def test_every_registered_attack_is_usable_from_the_cli():
    assert set(ATTACKS) | {"alg1-N"} == set(ATTACK_NAMES)
    assert set(CURVE_ATTACKS) <= set(ATTACK_NAMES)  # curves use the same names


def test_attack_typos_are_answered_with_the_choices():
    assert attack_name("alg1-12") == "alg1-12"
    with pytest.raises(argparse.ArgumentTypeError, match=r"did you mean 'deepfool'"):
        attack_name("deepfol")
    with pytest.raises(argparse.ArgumentTypeError, match="one of"):
        attack_name("alg1-N")  # the placeholder itself is not an attack
    with pytest.raises(ValueError, match=r"did you mean 'pgd'"):
        fooling_curves(None, torch.zeros(1, 1, 2, 2), torch.zeros(1), ["pgdd"], [0.1])


def _flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every optional flag of `parser` and of its subcommands, recursively."""
    actions = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                actions += _flags(sub)
        elif action.option_strings and action.dest not in ("help", "version"):
            actions.append(action)
    return actions


def test_every_flag_has_help_and_says_its_default():
    silent = [
        action.option_strings[-1]
        for action in _flags(_build_parser())
        if not action.help
        or (action.nargs != 0 and not action.required and "default" not in action.help)
    ]
    assert silent == []


def test_out_is_a_directory_in_every_command():
    for action in _flags(_build_parser()):
        if action.option_strings == ["--out"]:
            assert action.metavar == "DIR", action.help


def test_a_failed_run_leaves_no_directory(tmp_path):
    bad = tmp_path / "never"
    assert main(["attack", "deepfool", "--model", "zoo:nope", "--out", str(bad)]) == 2
    assert not bad.exists()


def test_steps_configure_the_named_attack_only(tmp_path):
    out = tmp_path / "fmn"
    argv = ["attack", "fmn", "--n", "4", "--steps", "3", "--init-steps", "7", "--out", str(out)]
    assert main(argv) == 0
    described = json.loads((out / "attack.json").read_text())["attack"]
    assert "steps=3" in described and "steps=7" in described  # FMN 3, its DeepFool start 7
    assert main(["attack", "pgd", "--eps", "0.1", "--steps", "2", "--n", "2",
                 "--out", str(tmp_path / "p")]) == 0  # fmt: skip
    assert "steps=2" in json.loads((tmp_path / "p" / "attack.json").read_text())["attack"]


def test_budgets_accept_fractions(tmp_path):
    assert parse_number("8/255") == pytest.approx(8 / 255)
    assert parse_number(" 1e-2 ") == 0.01
    with pytest.raises(ValueError, match="8/255"):
        parse_number("8/0")
    assert parse_epsilons("0:8/255:3")[-1] == pytest.approx(8 / 255)
    assert parse_epsilons("2/255,4/255") == pytest.approx([2 / 255, 4 / 255])
    with pytest.raises(ValueError, match="budgets >= 0"):
        parse_epsilons("-1,0.1")
    out = tmp_path / "a"
    assert main(["attack", "pgd", "--eps", "8/255", "--n", "2", "--out", str(out)]) == 0
    assert "eps=0.0313725" in json.loads((out / "attack.json").read_text())["attack"]


def test_curves_take_registry_names_and_the_norm(lenet_clf, mnist_test):
    x, y = mnist_test.x[:12], mnist_test.y[:12]
    eps = [0.0, 1.0, 3.0]
    curves = fooling_curves(lenet_clf, x, y, ["deepfool", "pgd"], eps, p=2, steps=3)
    correct = lenet_clf.predict(x) == y
    norms = DeepFool(p=2)(lenet_clf, x, y).norms[correct]
    assert curves.ratios["deepfool"] == [float((norms <= e).float().mean()) for e in eps]
    old = fooling_curves(lenet_clf, x, y, ["deepfool-l2"], eps, p=2)
    assert old.ratios["deepfool-l2"] == curves.ratios["deepfool"]  # the older spelling
    with pytest.raises(ValueError, match="supports p = inf"):
        fooling_curves(lenet_clf, x, y, ["spsa"], eps, p=2)


def test_foolbox_habits_meet_the_boundaryscope_way(lenet_clf, mnist_test):
    x = mnist_test.x[:2]
    with pytest.raises(TypeError, match=r"belong to the constructor.*PGD\(eps=8/255"):
        PGD()(lenet_clf, x, epsilons=[0.1])
    result = PGD(eps=0.1, steps=2)(lenet_clf, x)
    assert isinstance(result, AttackResult)
    with pytest.raises(TypeError, match=r"result\.adversarial"):
        _raw, _clipped, _ = result
    with pytest.raises(TypeError, match=r"(?i)wrap it"):
        PGD()(torch.nn.Linear(2, 2), x)


def test_torchattacks_habit_gets_the_working_form(lenet_clf):
    # Issue 25: PGD(model, eps=...) gave a raw TypeError.
    with pytest.raises(TypeError, match=r"PGD\(eps=8/255\)\(Classifier\(model.*Sequential"):
        PGD(lenet_clf.model, eps=0.3)
    from boundaryscope.attacks import DeepFool

    with pytest.raises(TypeError, match=r"DeepFool takes its settings as keywords"):
        DeepFool(lenet_clf.model)
    assert isinstance(PGD(eps=0.3), PGD)


def test_arch_takes_constructor_settings_and_refuses_inputs_it_cannot_take():
    assert parse_arch("lenet:num_classes=3,image_size=32") == (
        "lenet",
        {"num_classes": 3, "image_size": 32},
    )
    model = build("lenet:num_classes=3")
    assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 3)
    with pytest.raises(ValueError, match=r"cannot take 1×8×8 images.*mlp"):
        build("lenet", image_size=8)
    with pytest.raises(ValueError, match="key=value"):
        parse_arch("lenet:10")
    with pytest.raises(ValueError, match="takes the settings"):
        build("lenet:colour=3")


def test_train_lenet_on_digits_is_refused_clearly(tmp_path, capsys):
    assert main(["train", "--arch", "lenet", "--data", "digits", "--out", str(tmp_path)]) == 2
    assert "cannot take 1×8×8 images" in capsys.readouterr().err


def test_python_dash_m_and_version():
    done = subprocess.run(
        [sys.executable, "-m", "boundaryscope", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("boundaryscope ")


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["train", "--help"]])
def test_version_and_help_do_not_load_torch(argv):
    # Issue 25: `--version` and `--help` took 2.5 s importing torch.
    probe = (
        "import sys; from boundaryscope.cli import main; code = main(sys.argv[1:]); "
        "sys.stdout.flush(); sys.exit(3 if 'torch' in sys.modules else code)"
    )
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(("boundaryscope ", "usage: boundaryscope"))


def test_balanced_sample_spreads_over_the_classes(mnist_test):
    sample = mnist_test.balanced(25)
    counts = torch.bincount(sample.y, minlength=10)
    assert len(sample) == 25 and int(counts.min()) == 2 and int(counts.max()) == 3
    assert mnist_test.balanced(None) is mnist_test and mnist_test.missing_classes() == []
    assert len(mnist_test.balanced(10**6)) == len(mnist_test)
    one_class = type(mnist_test)(
        mnist_test.x[:4], torch.zeros(4, dtype=torch.int64), "t", mnist_test.classes
    )
    assert one_class.missing_classes() == [c for c in mnist_test.classes if c != "0"]
    assert math.isclose(len(one_class.balanced(3)), 3)


@pytest.mark.parametrize(
    "command",
    [
        ["attack", "deepfool", "--n", "2"],
        ["report", "--n", "2"],
        ["curves", "--n", "2"],
        ["noise", "--n", "2"],
        ["universal", "--n", "2"],
        ["compare", "zoo:lenet-mnist", "--n", "2"],
        ["geometry", "curvature", "--n", "2"],
        ["geometry", "sections", "--n", "2"],
        ["geometry", "paths", "--n", "2"],
        ["geometry", "angles"],
        ["detect", "fit", "--n", "2"],
        ["detect", "score", "no-detector.json", "--n", "2"],
        ["verify", "--n", "2"],
    ],
    ids=" ".join,
)
def test_every_command_refuses_a_file_name_as_out(command, tmp_path, capsys):
    assert main([*command, "--out", str(tmp_path / "x.json")]) == 2
    assert "output directory of every command" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_budgeted_attacks_without_eps_take_a_tenth_of_the_box(lenet_clf, mnist_test):
    # Issue 25: PGD() silently used eps = 0.1 whatever the data.
    from boundaryscope import Classifier
    from boundaryscope.attacks import APGD, FGSM, SPSA, Algorithm1, Square

    x = mnist_test.x[:4]
    same = PGD(steps=3)(lenet_clf, x)
    assert torch.equal(same.adversarial, PGD(eps=0.1, steps=3)(lenet_clf, x).adversarial)
    scaled_net = torch.nn.Sequential(lambda_layer(1 / 255), lenet_clf.model).eval()
    scaled = Classifier(scaled_net, (0, 255))
    for attack, fraction in [(PGD(steps=3), 0.1), (FGSM(), 0.1), (APGD(steps=3), 0.3),
                             (Square(queries=5), 0.3), (Algorithm1(), 0.1),
                             (SPSA(steps=12, samples=2), 0.1)]:  # fmt: skip
        result = attack(scaled, 255 * x)
        assert float(result.perturbation.abs().amax()) <= fraction * 255 * (1 + 1e-5)
        assert float(result.perturbation.abs().amax()) > 0.5 * fraction * 255, attack
        assert "eps=None" in repr(attack)
    unbounded = Classifier(lenet_clf.model, bounds=(-math.inf, math.inf))
    with pytest.raises(ValueError, match=r"PGD needs eps.*unbounded.*0\.1 of the box width"):
        PGD()(unbounded, x)


class lambda_layer(torch.nn.Module):  # noqa: N801 - reads as the factory it stands for
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale
