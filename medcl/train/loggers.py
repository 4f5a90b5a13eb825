"""The Lightning loggers of a run, from ``trainer.logger``: ``csv``, ``tensorboard``, ``mlflow``.

All three write beside each other under the run folder ``OUT``, so that one folder holds the run::

    OUT/logs/metrics.csv               csv          (pretraining)
    OUT/logs/events.out.tfevents.*     tensorboard  (``tensorboard --logdir OUT/logs``)
    OUT/logs/finetune/...              both, for fine-tuning
    OUT/mlruns/                        mlflow: a local file store (``mlflow ui --backend-store-uri
                                       OUT/mlruns``), or ``trainer.mlflow_uri``; one MLflow run per
                                       pretraining (a resumed one continues its run,
                                       ``OUT/logs/mlflow_run_id``) and per fine-tuning

TensorBoard files are written by tensorboardX when the ``tensorboard`` package is absent
(Lightning's :class:`~lightning.pytorch.loggers.TensorBoardLogger` takes either). MLflow is the
optional extra ``medcl[mlflow]`` (``mlflow-skinny`` is enough); no tracking server is started:
the file store is plain files, which MLflow 3 accepts once ``MLFLOW_ALLOW_FILE_STORE`` is set (set
here when unset).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from medcl.config import LOGGERS, Config
from medcl.errors import ConfigError
from medcl.io import write_text

MLFLOW_EXPERIMENT = "medcl"
"""The MLflow experiment every medcl run is logged under (one MLflow run per medcl run)."""

MLFLOW_RUN_FILE = "mlflow_run_id"
"""In ``OUT/logs``: the MLflow run of a pretraining, continued when the run resumes."""


class RecordedMLFlowLogger(MLFlowLogger):
    """Lightning's MLflow logger that also writes its run id to ``id_file`` with its first
    metrics (rank 0 only), so that a resumed pretraining can continue the run.

    Written with the first metrics rather than at once: the other loggers check at set-up that
    ``OUT/logs`` is empty, and a file there would make them warn.

    Args:
        id_file: Where the run id goes; ``None``: nowhere.
        **kwargs: :class:`~lightning.pytorch.loggers.MLFlowLogger`'s arguments.
    """

    def __init__(self, id_file: Path | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._id_file = id_file
        self._recorded = id_file is None or id_file.is_file()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log ``metrics`` (and, the first time, record the run id)."""
        super().log_metrics(metrics, step)
        if not self._recorded and self._id_file is not None:
            write_text(str(self.run_id), self._id_file)
            self._recorded = True


def mlflow_uri(cfg: Config, out: str | Path) -> str:
    """The tracking URI: ``trainer.mlflow_uri``, else the file store ``OUT/mlruns`` as a URI."""
    if cfg.trainer.mlflow_uri:
        return cfg.trainer.mlflow_uri
    return (Path(out).resolve() / "mlruns").as_uri()


def check_loggers(cfg: Config) -> None:
    """Refuse, before any work, a logger whose package is not installed.

    Raises:
        ConfigError: ``mlflow`` requested without MLflow, or an unknown name.
    """
    for name in cfg.trainer.logger:
        if name not in LOGGERS:
            raise ConfigError(f"trainer.logger: unknown logger {name!r}; one of {LOGGERS}")
    if "mlflow" in cfg.trainer.logger:
        try:
            import mlflow  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                "trainer.logger: mlflow is not installed; pip install 'medcl[mlflow]' "
                "(or drop mlflow from the list)"
            ) from exc


def build_loggers(cfg: Config, out: str | Path, stage: str = "") -> list[Logger]:
    """The loggers named by ``trainer.logger`` for a run in ``out``.

    Args:
        cfg: The run config (``trainer.logger``, ``trainer.mlflow_uri``).
        out: The run folder.
        stage: ``""`` for pretraining (``OUT/logs``), else a sub-folder of ``OUT/logs`` (e.g.
            ``finetune``) and a suffix of the MLflow run name.

    Returns:
        The loggers in the configured order (empty when the list is empty).

    Raises:
        ConfigError: See :func:`check_loggers`.
    """
    check_loggers(cfg)
    out = Path(out)
    root, version = (out, "logs") if not stage else (out / "logs", stage)
    loggers: list[Logger] = []
    for name in cfg.trainer.logger:
        if name == "csv":
            loggers.append(CSVLogger(root, name="", version=version))
        elif name == "tensorboard":
            loggers.append(
                TensorBoardLogger(root, name="", version=version, default_hp_metric=False)
            )
        else:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            # a resumed pretraining goes on logging into the MLflow run it started
            id_file = root / version / MLFLOW_RUN_FILE
            resume = id_file.read_text().strip() if not stage and id_file.is_file() else None
            loggers.append(
                RecordedMLFlowLogger(
                    id_file if not stage else None,
                    experiment_name=MLFLOW_EXPERIMENT,
                    run_name=out.resolve().name + (f"-{stage}" if stage else ""),
                    tracking_uri=mlflow_uri(cfg, out),
                    run_id=resume or None,
                )
            )
    return loggers
