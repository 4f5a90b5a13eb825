"""The review dashboard's pages, one module each: Streamlit layout; the logic is in medcl.app.

- :mod:`.overview` (``overview``): configuration, data, test metrics with intervals, label
  efficiency;
- :mod:`.embedding` (``embedding``): interactive 2-D embedding (box/lasso selection shows images);
- :mod:`.case` (``case``): one image: prediction, probabilities, Grad-CAM, nearest neighbours;
- :mod:`.errors` (``errors``): confusion matrix, per-class metrics, reliability, cases to review;
- :mod:`.augment` (``augment``): the augmented views the model was trained with;
- :mod:`.label` (``label``): which unlabelled images to label next, as a CSV sheet.

Every page module has a ``TITLE`` and a ``render(ctx)`` taking the run's
:class:`~medcl.app.pages.context.Ctx`; :data:`PAGES` lists them in sidebar order. Shared pieces:
:mod:`.context` (cached readers of the run's files), :mod:`.widgets` (thumbnails, opening a case).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from medcl.app.pages import augment, case, embedding, errors, label, overview
from medcl.app.pages.context import Ctx, load_context

_MODULES: dict[str, ModuleType] = {
    "overview": overview,
    "embedding": embedding,
    "case": case,
    "errors": errors,
    "augment": augment,
    "label": label,
}
#: Page key (``?page=<key>``) -> title, in sidebar order.
PAGES: dict[str, str] = {key: module.TITLE for key, module in _MODULES.items()}
#: Page key -> the function that lays the page out.
RENDER: dict[str, Callable[[Ctx], None]] = {key: m.render for key, m in _MODULES.items()}
DEFAULT_PAGE = "overview"

__all__ = ["DEFAULT_PAGE", "PAGES", "RENDER", "Ctx", "load_context", "page_from_query"]


def page_from_query(value: str) -> str:
    """The page a ``?page=`` value names, by key or by title (any case); the overview otherwise."""
    value = str(value).strip()
    titles = {title.lower(): key for key, title in PAGES.items()}
    return value if value in PAGES else titles.get(value.lower(), DEFAULT_PAGE)
