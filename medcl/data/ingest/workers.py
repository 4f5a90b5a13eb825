"""Worker processes: their settings, the pool that runs tasks, and capture of library chatter.

Library warnings and log records (pydicom, nibabel, PIL, …) are counted by library and category
instead of being printed: they can quote header values. The counts go to the ingest log.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from medcl.data.pseudonym import Pseudonymizer
from medcl.errors import MedclError

_QUIET_LOGGERS = ("pydicom", "nibabel", "PIL")
_WARNING_SOURCES = ("pydicom", "nibabel", "PIL", "numpy", "torch", "medcl")


@dataclass
class WorkerConfig:
    """What every worker needs: the source root, the pseudonymiser and the cache settings."""

    root: str
    pseudonymize: Pseudonymizer
    dims: int
    size: int | None
    cache_root: str


_CONFIG: WorkerConfig | None = None  # this process's settings (set by the pool)
_LOG_COUNTS: Counter[str] = Counter()


class _CountingHandler(logging.Handler):
    """Counts log records by library and level instead of printing them."""

    def emit(self, record: logging.LogRecord) -> None:  # noqa: D102
        _LOG_COUNTS[f"{record.name.split('.')[0]} log {record.levelname}"] += 1


_HANDLER = _CountingHandler(level=logging.DEBUG)


@contextmanager
def quiet_loggers() -> Iterator[None]:
    """Route library log records to a counter instead of the console, for the duration."""
    saved = []
    for name in _QUIET_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, lg.propagate))
        lg.addHandler(_HANDLER)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, propagate in saved:
            lg.removeHandler(_HANDLER)
            lg.propagate = propagate


def worker_config() -> WorkerConfig:
    """This process's :class:`WorkerConfig` (inside :class:`Pool` only)."""
    assert _CONFIG is not None, "worker not initialised"
    return _CONFIG


def _init_worker(config: WorkerConfig, in_main: bool = False) -> None:
    """Set this process's config; a worker process also silences the library loggers."""
    global _CONFIG
    _CONFIG = config
    if not in_main:
        for name in _QUIET_LOGGERS:
            lg = logging.getLogger(name)
            lg.addHandler(_HANDLER)
            lg.propagate = False


def _warning_source(filename: str) -> str:
    """The library a warning came from (by the path of the file that raised it), or ``other``."""
    parts = Path(filename).parts
    for name in _WARNING_SOURCES:
        if name in parts:
            return name
    return "other"


@contextmanager
def capture_warnings(counts: Counter[str]) -> Iterator[None]:
    """Count warnings (category and library only, never their text) and library log records."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for w in caught:
                counts[f"{_warning_source(w.filename)} {w.category.__name__}"] += 1
            counts.update(_LOG_COUNTS)
            _LOG_COUNTS.clear()


class Pool:
    """Runs tasks inline (1 worker) or in a process pool (chunked), with a progress bar."""

    def __init__(self, workers: int, config: WorkerConfig, progress: bool) -> None:
        self.workers = workers
        self.config = config
        self.progress = progress
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> Pool:
        _init_worker(self.config, in_main=True)
        return self

    def __exit__(self, *exc) -> None:
        global _CONFIG
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        _CONFIG = None

    def map(
        self, fn: Callable, tasks: Sequence, desc: str, chunksize: int | None = None
    ) -> Iterator:
        """Results of ``fn`` over ``tasks`` in task order.

        Args:
            fn: The task function (a module-level function: it is pickled by name).
            tasks: Its arguments.
            desc: The progress bar's label.
            chunksize: Tasks sent to a worker at once (default: about 8 batches per worker, at
                most 64 tasks each); 1 for large tasks, so that no worker idles at the end.
        """
        if not tasks:
            return
        with tqdm(
            total=len(tasks),
            desc=desc,
            unit="file",
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
        ) as bar:
            if self.workers == 1 or len(tasks) == 1:
                for t in tasks:
                    yield fn(t)
                    bar.update()
                return
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=_mp_context(),
                    initializer=_init_worker,
                    initargs=(self.config,),
                )
            chunk = chunksize or max(1, min(64, len(tasks) // (self.workers * 8)))
            try:
                for result in self._executor.map(fn, tasks, chunksize=chunk):
                    yield result
                    bar.update()
            except BrokenProcessPool:
                raise MedclError(
                    "a worker process died while decoding (out of memory or a codec "
                    "crash); re-run with --workers 1 to find the file"
                ) from None


def _mp_context() -> multiprocessing.context.BaseContext:
    """``fork`` on Linux (workers start at once, no re-import of the caller's ``__main__``, the
    model PyTorch's own data loader uses), ``spawn`` elsewhere (fork is unsafe on macOS)."""
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")
