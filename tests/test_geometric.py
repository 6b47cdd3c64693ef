"""The geometric (ManiFool-style) attack: review eq. 2's non-additive regime."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from boundaryscope import Classifier
from boundaryscope.attacks import ATTACKS, GeometricAttack, warp


def _bar(angle_deg: float, size: int = 21) -> Tensor:
    """A bright bar through the centre at `angle_deg`, blurred so rotations are smooth."""
    coords = torch.linspace(-1, 1, size, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    a = math.radians(angle_deg)
    distance = (-math.sin(a) * xx + math.cos(a) * yy).abs()  # to the line at angle a
    along = (math.cos(a) * xx + math.sin(a) * yy).abs()
    return (torch.exp(-((distance / 0.12) ** 2)) * (along < 0.8)).float()[None]


class _Orientation(nn.Module):
    """Class 0 = 'horizontal', 1 = 'vertical': correlation with two bar templates."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("templates", torch.stack([_bar(0.0)[0], _bar(90.0)[0]]))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("nchw,khw->nk", x, self.templates)


class _Radial(nn.Module):
    """Depends on the image only through a radial weighting: rotations cannot change it."""

    def __init__(self, size: int = 21) -> None:
        super().__init__()
        coords = torch.linspace(-1, 1, size, dtype=torch.float64)
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")
        self.register_buffer("weight", torch.exp(-4 * (xx**2 + yy**2)).float())

    def forward(self, x: Tensor) -> Tensor:
        mass = (x[:, 0] * self.weight).sum((1, 2))
        return torch.stack([mass, 0.3 * mass], dim=1)  # class 0 for any non-blank image


def _smallest_angle_by_grid(clf: Classifier, x: Tensor, step_deg: float = 0.05) -> Tensor:
    """Brute force: the smallest |angle| (both senses) whose rotation changes the label."""
    clean = clf.predict(x)
    angles = torch.arange(step_deg, 180.0, step_deg, dtype=torch.float64)
    best = torch.full((x.shape[0],), math.inf, dtype=torch.float64)
    for sign in (1.0, -1.0):
        for chunk in angles.split(400):
            theta = (sign * torch.deg2rad(chunk))[:, None]
            for i in range(x.shape[0]):
                labels = clf.predict(warp(x[i : i + 1].expand(len(chunk), -1, -1, -1), theta))
                changed = (labels != clean[i]).nonzero()
                if changed.numel():
                    best[i] = min(float(best[i]), float(chunk[int(changed[0, 0])]))
    return best


def test_rotation_attack_returns_the_smallest_angle():
    clf = Classifier(_Orientation().eval(), bounds=(0, 1))
    x = torch.stack([_bar(a) for a in (20.0, -30.0, 10.0, 70.0)])
    assert clf.predict(x).tolist() == [0, 0, 0, 1]
    result = GeometricAttack(transform="rotation", grid=256)(clf, x)
    assert result.success.all()
    found = torch.rad2deg(result.details["params"][:, 0].abs())
    expected = _smallest_angle_by_grid(clf, x)
    # Near 45° - |bar angle| (25, 15, 35, 25 degrees), whichever sense is nearer.
    assert torch.allclose(expected, torch.tensor([25.0, 15.0, 35.0, 25.0], dtype=torch.float64),
                          atol=2.0)  # fmt: skip
    torch.testing.assert_close(found.double(), expected, atol=0.1, rtol=0)
    # The reported path length is the image-space length of the rotation path.
    assert (result.details["path_length"] > result.norms * 0.99).all()
    assert torch.allclose(
        result.details["invariance"], result.details["path_length"] / x.flatten(1).norm(dim=1)
    )


def test_rotation_invariant_model_is_never_fooled():
    clf = Classifier(_Radial().eval(), bounds=(0, 1))
    x = torch.stack([_bar(a) for a in (0.0, 33.0, 80.0)])
    result = GeometricAttack(transform="rotation", steps=10, grid=32)(clf, x)
    assert not result.success.any()
    assert torch.isinf(result.norms).all()


@pytest.mark.parametrize("transform", ["translation", "similarity"])
def test_other_transforms_on_a_batchnorm_cifar_shaped_model(transform, seed):
    from boundaryscope.zoo import build

    torch.manual_seed(seed)
    net = build("resnet8", in_channels=3, image_size=32, width=8)
    net.train()
    with torch.no_grad():
        net(torch.rand(32, 3, 32, 32))
    clf = Classifier(net.eval())
    x = torch.rand(4, 3, 32, 32)
    result = GeometricAttack(transform=transform, steps=20)(clf, x)
    params = result.details["params"]
    assert params.shape == (4, 2 if transform == "translation" else 4)
    bound = torch.tensor(GeometricAttack(transform=transform).max_params)
    assert (params.abs() <= bound + 1e-6).all()
    # Success is judged on the returned point, which is the warp at the returned params.
    torch.testing.assert_close(result.adversarial, clf.clip(warp(x, params, transform)))
    assert (clf.predict(result.adversarial) != clf.predict(x))[result.success].all()


def test_geometric_attack_refuses_what_it_cannot_do():
    assert ATTACKS["geometric"] is GeometricAttack
    with pytest.raises(ValueError, match="transform"):
        GeometricAttack(transform="shear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_params"):
        GeometricAttack(transform="translation", max_params=(1.0,))
    clf = Classifier(nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).eval())
    with pytest.raises(ValueError, match="images"):
        GeometricAttack()(clf, torch.rand(2, 6))
