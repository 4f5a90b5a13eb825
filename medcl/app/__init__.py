"""Logic of the review dashboard (``apps/dashboard.py``, ``medcl dashboard``) and its pages.

Everything the Streamlit app decides is computed here, so that it can be unit-tested without a
browser:

- :mod:`.run` — locate a run folder and read its files (only files inside the run folder and the
  manifest its ``run_summary.json`` names).
- :mod:`.overview` — config, data, metric and label-efficiency summary tables.
- :mod:`.figures` — Plotly figures (embedding scatter, confusion matrix, reliability diagram, …).
- :mod:`.sampling` — downsampling of large scatter plots that keeps every point that matters.
- :mod:`.neighbours` — nearest neighbours in embedding space.
- :mod:`.cases` — misclassified and low-confidence cases for review.
- :mod:`.images` — display arrays, slices, thumbnails and heat-map overlays.
- :mod:`.gradcam` — Grad-CAM maps of a :class:`~medcl.evaluate.classifier.Classifier`.
- :mod:`.augment` — the augmentation views the model was trained with.
- :mod:`.acquisition` — which unlabelled images to label next (uncertainty + diversity).
- :mod:`.labelling` — the annotation sheet and the import of its labels into a new manifest.
- :mod:`.formatting` — the text the pages show (numbers, intervals, a model's and a case's facts).
- :mod:`.pages` — the Streamlit pages, one module each, and their cached readers: layout only,
  every decision above.

Nothing here shows a source path: the only keys that leave this package are the pseudonymous
``image_id`` and ``patient_key``.
"""
