"""Citations of the report: ``[[key]]`` or ``[[key, locator]]`` markers become links.

Section texts cite the literature with markers such as ``[[thesis, §3.2]]``; the HTML
writer turns each into an author–year link (``Moosavi-Dezfooli 2019, §3.2``) to the
bibliography at the end of the page, which lists exactly the works cited. The reference
values that the verdict compares a model with (`REFERENCE_POINTS`) live here too, each
with the work it comes from.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from boundaryscope.metrics import data_family

__all__ = [
    "BIBLIOGRAPHY",
    "REFERENCE_POINTS",
    "Citations",
    "ReferencePoint",
    "Work",
    "reference_points",
]


@dataclass(frozen=True)
class Work:
    """One entry of the bibliography: the short author–year label and the full citation."""

    label: str
    citation: str


BIBLIOGRAPHY: dict[str, Work] = {
    "thesis": Work(
        "Moosavi-Dezfooli 2019",
        "S.-M. Moosavi-Dezfooli. Geometry of Adversarial Robustness of Deep Networks: "
        "Methods and Applications. PhD thesis, EPFL, 2019.",
    ),
    "deepfool": Work(
        "Moosavi-Dezfooli et al. 2016",
        "S.-M. Moosavi-Dezfooli, A. Fawzi, P. Frossard. DeepFool: a simple and accurate "
        "method to fool deep neural networks. CVPR 2016.",
    ),
    "balda": Work(
        "Balda et al. 2018",
        "E. R. Balda, A. Behboodi, R. Mathar. On Generation of Adversarial Examples using "
        "Convex Programming. Asilomar Conference on Signals, Systems, and Computers, 2018.",
    ),
    "geometry": Work(
        "Fawzi et al. 2017",
        "A. Fawzi, S.-M. Moosavi-Dezfooli, P. Frossard. The Robustness of Deep Networks: A "
        "geometrical perspective. IEEE Signal Processing Magazine 34(6), 2017.",
    ),
    "universal": Work(
        "Moosavi-Dezfooli et al. 2017",
        "S.-M. Moosavi-Dezfooli, A. Fawzi, O. Fawzi, P. Frossard. Universal adversarial "
        "perturbations. CVPR 2017.",
    ),
    "cure": Work(
        "Moosavi-Dezfooli et al. 2019",
        "S.-M. Moosavi-Dezfooli, A. Fawzi, J. Uesato, P. Frossard. Robustness via curvature "
        "regularization, and vice versa. CVPR 2019.",
    ),
    "fgsm": Work(
        "Goodfellow et al. 2015",
        "I. Goodfellow, J. Shlens, C. Szegedy. Explaining and harnessing adversarial "
        "examples. ICLR 2015.",
    ),
    "madry": Work(
        "Madry et al. 2018",
        "A. Madry, A. Makelov, L. Schmidt, D. Tsipras, A. Vladu. Towards deep learning "
        "models resistant to adversarial attacks. ICLR 2018.",
    ),
    "fmn": Work(
        "Pintor et al. 2021",
        "M. Pintor, F. Roli, W. Brendel, B. Biggio. Fast minimum-norm adversarial attacks "
        "through adaptive norm constraints. NeurIPS 2021.",
    ),
    "robustbench": Work(
        "Croce et al. 2021",
        "F. Croce, M. Andriushchenko, V. Sehwag, E. Debenedetti, N. Flammarion, M. Chiang, "
        "P. Mittal, M. Hein. RobustBench: a standardized adversarial robustness benchmark. "
        "NeurIPS Datasets and Benchmarks 2021.",
    ),
    "autoattack": Work(
        "Croce & Hein 2020",
        "F. Croce, M. Hein. Reliable evaluation of adversarial robustness with an ensemble "
        "of diverse parameter-free attacks. ICML 2020.",
    ),
    "pintor": Work(
        "Pintor et al. 2022",
        "M. Pintor, L. Demetrio, A. Sotgiu, A. Demontis, N. Carlini, B. Biggio, F. Roli. "
        "Indicators of attack failure: debugging and improving optimization of adversarial "
        "examples. NeurIPS 2022.",
    ),
    "fab": Work(
        "Croce & Hein 2020b",
        "F. Croce, M. Hein. Minimally distorted adversarial examples with a fast adaptive "
        "boundary attack. ICML 2020.",
    ),
    "square": Work(
        "Andriushchenko et al. 2020",
        "M. Andriushchenko, F. Croce, N. Flammarion, M. Hein. Square attack: a query-efficient "
        "black-box adversarial attack via random search. ECCV 2020.",
    ),
    "noise": Work(
        "Fawzi et al. 2016",
        "A. Fawzi, S.-M. Moosavi-Dezfooli, P. Frossard. Robustness of classifiers: from "
        "adversarial to random noise. NeurIPS 2016.",
    ),
}

_MARKER = re.compile(r"\[\[(\w+)(?:,\s*([^\]]+))?\]\]")
_CODE = re.compile(r"`([^`]+)`")


def _label(key: str, locator: str | None) -> str:
    """How a citation reads: the work's label, then the locator ("Moosavi-Dezfooli 2019, §3.2")."""
    return BIBLIOGRAPHY[key].label + (f", {locator}" if locator else "")


@dataclass
class Citations:
    """Turns citation markers into links and remembers, in order, which works were cited."""

    cited: list[str] = field(default_factory=list)

    def link(self, text: str, strict: bool = True) -> str:
        """`text`, HTML-escaped, with every ``[[key, locator]]`` replaced by a bibliography link.

        Every text a page shows is plain text, escaped here: numbers and names read back
        from a results file can never become markup (docs/security.md).

        Args:
            text: Plain text; `backticks` quote commands, shown as code.
            strict: Refuse a marker of an unknown work (section texts: a typo); else, for
                table cells that also hold data (a model's name), leave it as text.

        Raises:
            KeyError: A marker names a work that is not in `BIBLIOGRAPHY` (if `strict`).
        """
        # Plain text may quote commands in `backticks`, shown as code.
        body = _CODE.sub(r"<code>\1</code>", html.escape(text))

        def replace(match: re.Match[str]) -> str:
            key, locator = match.group(1), match.group(2)
            if key not in BIBLIOGRAPHY and not strict:
                return match.group(0)
            if key not in BIBLIOGRAPHY:
                raise KeyError(f"citation [[{key}]]: not in the bibliography {list(BIBLIOGRAPHY)}")
            if key not in self.cited:
                self.cited.append(key)
            return f'<a class="cite" href="#ref-{key}">{_label(key, locator)}</a>'

        return _MARKER.sub(replace, body)

    def plain(self, text: str) -> str:
        """`text` with each known ``[[key, locator]]`` as plain "Label, locator" (alt texts).

        Not escaped here: the template's autoescape escapes it, as any attribute value.
        """

        def replace(match: re.Match[str]) -> str:
            key, locator = match.group(1), match.group(2)
            return _label(key, locator) if key in BIBLIOGRAPHY else match.group(0)

        return _MARKER.sub(replace, text)

    def works(self) -> list[tuple[str, Work]]:
        """The cited works, sorted by label as a bibliography is."""
        return sorted(((k, BIBLIOGRAPHY[k]) for k in self.cited), key=lambda kw: kw[1].label)


@dataclass(frozen=True)
class ReferencePoint:
    """A published value to compare a model with.

    Attributes:
        model: The model it was measured on.
        quantity: What was measured (same name as the verdict's rows).
        value: The value, as published.
        source: Citation marker of the work (``[[thesis, Table 3.1]]``).
    """

    model: str
    quantity: str
    value: str
    source: str


_RHO2 = "ρ_adv, l2 (DeepFool)"
_RHO_INF = "ρ_adv, l∞ (DeepFool)"
_FGSM_OVER = "FGSM ρ ÷ DeepFool ρ"
_ROBUST = "robust accuracy"

REFERENCE_POINTS: dict[str, list[ReferencePoint]] = {
    "mnist": [
        ReferencePoint("LeNet", _RHO2, "0.20", "[[thesis, Table 3.1]]"),
        ReferencePoint("FC500-150-10", _RHO2, "0.11", "[[thesis, Table 3.1]]"),
        ReferencePoint("LeNet", _RHO_INF, "0.10", "[[thesis, Table 3.2]]"),
        ReferencePoint("FC500-150-10", _RHO_INF, "0.04", "[[thesis, Table 3.2]]"),
        ReferencePoint("LeNet", _FGSM_OVER, "5.0× (l2), 2.6× (l∞)", "[[thesis, Tables 3.1–3.2]]"),
        ReferencePoint(
            "adversarially trained CNN (PGD)",
            f"{_ROBUST}, l∞ ε = 0.3",
            "89–93% (PGD, 40–100 steps)",
            "[[madry]]",
        ),
        ReferencePoint("standard (undefended) CNN", f"{_ROBUST}, l∞ ε = 0.3", "≈ 0%", "[[madry]]"),
    ],
    "cifar10": [
        ReferencePoint("NIN", _RHO2, "0.023", "[[thesis, Table 3.1]]"),
        ReferencePoint("LeNet", _RHO2, "0.030", "[[thesis, Table 3.1]]"),
        ReferencePoint("NIN", _RHO_INF, "0.008", "[[thesis, Table 3.2]]"),
        ReferencePoint(
            "standard (undefended) ResNet", f"{_ROBUST}, l∞ ε = 8/255", "0%", "[[robustbench]]"
        ),
        ReferencePoint(
            "best adversarially trained models",
            f"{_ROBUST}, l∞ ε = 8/255",
            "≈ 60–70% (AutoAttack)",
            "[[robustbench]]",
        ),
    ],
    "imagenet": [
        ReferencePoint("CaffeNet", _RHO2, "0.0027", "[[thesis, Table 3.1]]"),
        ReferencePoint("GoogLeNet", _RHO2, "0.0019", "[[thesis, Table 3.1]]"),
        ReferencePoint(
            "standard (undefended) ResNet-50", f"{_ROBUST}, l∞ ε = 4/255", "0%", "[[robustbench]]"
        ),
    ],
}


def reference_points(shape: tuple[int, ...], data: str = "") -> tuple[str, list[ReferencePoint]]:
    """The reference family for inputs of `shape` (as `usual_budgets` decides) and its points.

    Fashion-MNIST (`data` ``fashion-mnist[:DIR]``) has MNIST's shape but none of its
    published values apply (its models are several times less robust: README, "Two
    datasets"); the seeds publish none for it, so its reports show no reference points.
    """
    if data.partition(":")[0] == "fashion-mnist":
        return "fashion-mnist", []
    family = data_family(shape)
    return family, REFERENCE_POINTS[family]
