"""The records a run keeps about its chosen weights, as stored in best.pt and calibration.json.

Which weights (Selection), the decision threshold (Threshold), how far those weights tell the validation
sets apart (Separation), and the threshold with the heatmap scale (Calibration).
A leaf module, so that the run directory, evaluation and training all read the same records without
importing one another.
"""

from dataclasses import asdict, dataclass
from typing import Any

from .errors import RunError


@dataclass
class Threshold:
    """score >= value means abnormal. `rule` and `fitted_on` say how it was obtained."""

    value: float
    rule: str
    fitted_on: str
    n_normal: int
    n_abnormal: int

    def to_dict(self) -> dict:
        """The record stored in calibration.json."""
        return asdict(self)


@dataclass(frozen=True)
class Selection:
    """Which weights a run keeps: the iteration, the validation metric and its value, and the rule."""

    iteration: int
    metric: str | None  # "val/aucp", "val/auc", or None when there is no validation data
    value: float | None
    selection: str  # how the checkpoint was chosen, in words

    def to_dict(self) -> dict[str, Any]:
        """The record stored in best.pt and calibration.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "Selection":
        """Read back a stored record; a missing or malformed field is a RunError."""
        try:
            return cls(int(record["iteration"]), record["metric"], record["value"], str(record.get("selection", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise RunError(f"a stored selection record is incomplete or malformed ({err!r}): {record!r}") from None


@dataclass(frozen=True)
class Separation:
    """How far the chosen weights tell the validation normals from the validation positives.

    `auc` is theirs at the chosen weights; `p_value` is the one-sided Mann-Whitney chance of an AUC as high
    with scores that do not separate the two sets. The same images chose the weights, so the test is
    lenient: a run that fails it has shown no separation at all.
    """

    auc: float
    p_value: float
    normal: int
    positive: int
    positives: str  # what the positives are, in words

    LEVEL = 0.05

    @property
    def above_chance(self) -> bool:
        """Whether the separation is more than chance at the 5 % level."""
        return self.p_value < self.LEVEL

    def sentence(self) -> str:
        """The check in words, with what to do when it fails."""
        measured = (
            f"AUC {self.auc:.3f} of {self.normal} held-out normals against {self.positive} {self.positives} "
            f"(one-sided Mann-Whitney p = {self.p_value:.2g})"
        )
        if self.above_chance:
            return f"The chosen weights tell the validation images apart better than chance: {measured}."
        return (
            f"The chosen weights do not tell the validation images apart better than chance: {measured}. The "
            "scores may rank images no better than at random. Likely causes: few abnormal images among the "
            "unlabelled ones, abnormalities that the restoration leaves in place, or too few validation images "
            "to tell (docs/transfer.md#when-the-selection-signal-stays-at-chance)."
        )

    def to_dict(self) -> dict[str, Any]:
        """The record stored in calibration.json and metrics.json."""
        return {**asdict(self), "above_chance": self.above_chance}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "Separation":
        """Read back a stored record."""
        return cls(
            float(record["auc"]), float(record["p_value"]), record["normal"], record["positive"], record["positives"]
        )


@dataclass(frozen=True)
class Calibration:
    """The decision threshold and the heatmap colour scale, fitted on validation data for `selection`."""

    threshold: Threshold
    heatmap_vmax: float
    heatmap_rule: str
    selection: Selection
    separation: Separation | None = None  # None without validation positives, or in a run calibrated before it

    def to_dict(self) -> dict[str, Any]:
        """calibration.json's layout."""
        record = {
            "threshold": self.threshold.to_dict(),
            "heatmap_scale": {"vmax": self.heatmap_vmax, "rule": self.heatmap_rule},
            "selection": self.selection.to_dict(),
        }
        if self.separation is not None:
            record["separation"] = self.separation.to_dict()
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "Calibration":
        """Read back calibration.json's layout."""
        scale = record["heatmap_scale"]
        return cls(
            Threshold(**record["threshold"]),
            float(scale["vmax"]),
            scale["rule"],
            Selection.from_dict(record["selection"]),
            Separation.from_dict(record["separation"]) if "separation" in record else None,
        )


def separation_warning(calibration: Calibration | None) -> str | None:
    """The warning for a run whose chosen weights failed the separation check; None when there is none."""
    separation = calibration.separation if calibration is not None else None
    if separation is None or separation.above_chance:
        return None
    return separation.sentence()
