"""torchrun sharding: 2 gloo processes give what 1 process gives (boundaryscope.distributed)."""

from __future__ import annotations

import json

import pytest
import torch

from boundaryscope.distributed import World, gather_attack_result, shard, sum_over_processes
from tests.subprocesses import BOUNDARYSCOPE, TORCHRUN, run_ok
from tests.subprocesses import run as subprocess_run


@pytest.mark.parametrize("n", [0, 1, 5, 64, 1001])
@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_shards_cover_every_sample_once_in_order(n, size):
    blocks = [shard(n, World(rank, size)) for rank in range(size)]
    covered = [i for block in blocks for i in range(n)[block]]
    assert covered == list(range(n))
    sizes = [len(range(n)[b]) for b in blocks]
    assert max(sizes) - min(sizes) <= 1


def test_one_process_is_a_no_op(lenet_clf, mnist_test):
    from boundaryscope.attacks import FGSM

    result = FGSM(eps=0.1)(lenet_clf, mnist_test.x[:4], mnist_test.y[:4])
    assert gather_attack_result(result, World()) is result
    assert sum_over_processes(3.0, World()) == 3.0


def run(argv: list[str], processes: int) -> None:
    run_ok(argv, TORCHRUN if processes > 1 else BOUNDARYSCOPE)


def numbers(payload: dict) -> dict:
    """The JSON of an attack without its timings and process count."""
    summary = {
        k: v
        for k, v in payload["summary"].items()
        if k not in ("seconds", "images_per_second", "processes")
    }
    return {**payload, "summary": summary}


@pytest.mark.slow
@pytest.mark.parametrize(
    "attack",
    [
        ["fgsm"],
        ["pgd", "--eps", "0.1", "--steps", "5"],
        ["spsa", "--eps", "0.1", "--steps", "3"],
        ["deepfool", "--p", "inf"],
        ["deepfool"],
    ],
    ids=lambda a: " ".join(a),
)
def test_two_processes_equal_one(tmp_path, attack):
    argv = ["attack", *attack, "--n", "40"]
    run([*argv, "--out", str(tmp_path / "one")], 1)
    run([*argv, "--out", str(tmp_path / "two")], 2)
    one = json.loads((tmp_path / "one" / "attack.json").read_text())
    two = json.loads((tmp_path / "two" / "attack.json").read_text())
    assert two["summary"]["processes"] == 2 and one["summary"]["processes"] == 1
    if attack == ["deepfool"]:
        # l2 DeepFool: the backward of LeNet's convolutions rounds differently at batch 20
        # and 40 (as it does in one process), so norms agree to float32 rounding.
        torch.testing.assert_close(
            torch.tensor([float(v) for v in two["norms"]]),
            torch.tensor([float(v) for v in one["norms"]]),
            rtol=1e-6,
            atol=0,
        )
        assert two["success"] == one["success"]
        assert two["adversarial_label"] == one["adversarial_label"]
    else:
        assert numbers(two) == numbers(one)  # bit-identical JSON apart from timings


@pytest.mark.slow
def test_universal_eval_two_processes_equal_one(tmp_path):
    v = torch.zeros(1, 28, 28)
    v[0, 10:18, 10:18] = 0.3
    torch.save(v, tmp_path / "v.pt")
    argv = ["universal", "--eval", str(tmp_path / "v.pt"), "--n-test", "101"]
    run([*argv, "--out", str(tmp_path / "one")], 1)
    run([*argv, "--out", str(tmp_path / "two")], 2)
    one = json.loads((tmp_path / "one" / "eval.json").read_text())
    two = json.loads((tmp_path / "two" / "eval.json").read_text())
    assert one == two and one["n"] == 101


@pytest.mark.slow
def test_unsharded_commands_refuse_torchrun(tmp_path):
    done = subprocess_run(["noise", "--n", "2", "--out", str(tmp_path / "n")], TORCHRUN)
    assert done.returncode != 0
    assert "does not run under torchrun yet" in done.stderr
