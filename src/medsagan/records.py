"""The records a run keeps about its chosen weights, as stored in best.pt and calibration.json.

Which weights (Selection), the decision threshold (Threshold), and the threshold with the heatmap scale
(Calibration).
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
class Calibration:
    """The decision threshold and the heatmap colour scale, fitted on validation data for `selection`."""

    threshold: Threshold
    heatmap_vmax: float
    heatmap_rule: str
    selection: Selection

    def to_dict(self) -> dict[str, Any]:
        """calibration.json's layout."""
        return {
            "threshold": self.threshold.to_dict(),
            "heatmap_scale": {"vmax": self.heatmap_vmax, "rule": self.heatmap_rule},
            "selection": self.selection.to_dict(),
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "Calibration":
        """Read back calibration.json's layout."""
        scale = record["heatmap_scale"]
        return cls(
            Threshold(**record["threshold"]),
            float(scale["vmax"]),
            scale["rule"],
            Selection.from_dict(record["selection"]),
        )
