"""medsagan: SAGAN (Zhang et al., MICCAI 2024) anomaly detection for chest X-rays and fundus photos.

Train on labelled normal images, unlabelled images and pseudo-anomalies; score an image by how much
the generator has to change it to make it look healthy.
"""

import importlib

# Load the evaluate subpackage (a light one) first, so that importing its modules later cannot rebind
# `medsagan.evaluate` from the function below to the subpackage.
importlib.import_module(".evaluate", __name__)

from .api import Model, evaluate, fit, load  # noqa: E402
from .config import Config, load_config  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Config", "Model", "__version__", "evaluate", "fit", "load", "load_config"]
