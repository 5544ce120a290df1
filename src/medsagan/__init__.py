"""medsagan: SAGAN (Zhang et al., MICCAI 2024) anomaly detection for chest X-rays and fundus photos.

Train on labelled normal images, unlabelled images and pseudo-anomalies; score an image by how much
the generator has to change it to make it look healthy.
"""

from .api import evaluate_run, fit, load
from .config import Config, load_config

__version__ = "0.1.0"

__all__ = ["Config", "__version__", "evaluate_run", "fit", "load", "load_config"]
