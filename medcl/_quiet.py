"""Keep the console readable: Lightning's banner lines and known third-party deprecation warnings
are silenced; medcl's own progress bars and messages stay."""

from __future__ import annotations

import logging
import warnings


def quiet_third_party() -> None:
    """Lower Lightning's info chatter to warnings and drop known harmless warnings."""
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*upsampling.*")
    # a pretraining without labelled validation rows has no kNN monitor, by design
    warnings.filterwarnings("ignore", message=".*across ranks is zero.*")
