"""``medcl ingest``: a folder (or one file) of medical images → a de-identified manifest.

Every regular file under SOURCE is considered, whatever its name; its format is read from its
content (:func:`medcl.data.readers.sniff`). Each file ends up either as one or more manifest rows or
as one line of the rejects file with a reason. Outputs, next to ``MANIFEST.csv``:

=========================== ======================================================================
``MANIFEST.csv``            rows (see :mod:`medcl.data.manifest`), ``MANIFEST.meta.json`` sidecar
``MANIFEST.rejects.csv``    ``source_id,path,reason`` for every file that gave no row
``MANIFEST.ingest.log``     counts, reasons and captured library warnings (no paths, no PHI)
``MANIFEST.cache/``         normalised float32 arrays and the incremental state (:mod:`.cache`)
=========================== ======================================================================

De-identification: readers pseudonymise identifiers as soon as they read them (keyed HMAC, project
secret); reasons and log lines are built from a fixed vocabulary and never quote a header value or a
library's exception message; library warnings are captured and only counted.

Source paths: PACS and CD exports often name folders after the patient, so no output carries a path
by default. Every row and reject carries ``source_id``, the keyed hash of its path relative to
SOURCE; the real paths go to one private map next to the secret
(:class:`medcl.data.pseudonym.PathMap`, mode 0600, git-ignored), the incremental state is keyed by
``source_id``. Each DICOM file's path components are compared with its own identifying header
values (:mod:`.phi`) and the hits are counted. ``paths="relative"`` writes the paths without hits
(non-DICOM files have no header: theirs are written), ``paths="keep"`` writes every path.

Labels, in order of precedence:

1. MedMNIST ``.npz`` rows carry their own labels (and splits).
2. ``labels`` CSV with a key column and ``label`` (:mod:`.labels`). Keyed by ``path`` (relative
   to SOURCE; optional ``patient``): a 3-D series row takes the label of its folder, else the
   common label of its slice files; ``patient`` replaces the path-based patient key of non-DICOM
   images. Keyed by ``AccessionNumber``, ``StudyInstanceUID``, ``SeriesInstanceUID`` or
   ``PatientID``: matched against the DICOM headers through keyed pseudonyms, the label applies to
   every image of that study, series or patient; problems are reported by CSV row number, never
   by value.
3. Without a labels CSV, PNG/TIFF/JPEG images are labelled by class folder when **every** such
   image sits directly in a first-level folder (``SOURCE/<class>/<image>``); otherwise they stay
   unlabelled.

Multi-label tasks (``task``, ``findings``, ``uncertain``; :mod:`.multilabel`): a labels CSV with
one 1/0/blank/−1 column per finding or a ``|``-separated ``label`` column, and ``.npz`` files with
N×K labels, give a manifest whose sidecar says ``"task": "multilabel"`` and whose ``classes`` are
the findings; each ``label`` is the image's findings as text (:mod:`medcl.data.findings`).

Classes: ``classes`` when given (labels must be among them; MedMNIST index ``i`` becomes
``classes[i]``), else the labels found (MedMNIST: ``"0"`` … ``"K-1"``), sorted numerically when
all are integers.

Modules: :mod:`.pipeline` (:func:`ingest`, the run's steps), :mod:`.discover` (arguments, the walk,
what changed since the last run), :mod:`.workers` (process pool, warning capture), :mod:`.decode`
(files and 3-D series to cached arrays and rows), :mod:`.labels`, :mod:`.multilabel`,
:mod:`.outputs` (manifest frame and sidecar, rejects CSV, log, report), :mod:`.phi` (does a path
repeat its header?).
"""

from __future__ import annotations

from medcl.data.ingest.discover import LABELS_REASON
from medcl.data.ingest.outputs import RULES_VERSION, IngestReport, log_path, rejects_path
from medcl.data.ingest.pipeline import ingest

__all__ = ["LABELS_REASON", "RULES_VERSION", "IngestReport", "ingest", "log_path", "rejects_path"]
