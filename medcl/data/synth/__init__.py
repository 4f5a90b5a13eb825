"""Phantom cohort: a generated, labelled set of real DICOM studies.

medcl cannot download data, so its default data set is generated. :func:`generate_cohort` writes
a cohort of synthetic patients as DICOM files (MR, CT or projection X-ray), a ``labels.csv`` and a
``cohort.json`` summary. The files are ordinary DICOM Part 10 files that exercise the same code
paths as clinical exports: modality LUTs, pixel spacing, slice geometry, and fake protected health
information (PHI) in the headers for the de-identification code to remove.

Generative model
----------------
Every patient is a small 3D anatomical phantom in normalised coordinates (the field of view spans
``[-1, 1]`` in x and y, and z for volumes). It is drawn once per patient and reused for all of that
patient's images, so lesions sit at the same anatomical position in every image of a patient:

* **Body**: an elliptic, slowly tapering cylinder with a subcutaneous fat layer of varying
  thickness; a vertebral body (cortical rim around marrow, a cylinder along z) posterior; up to two
  small posterolateral organs ("kidneys").
* **Organ**: a rotated ellipsoid of varying size and position inside the body with a smooth tissue
  texture (a Gaussian-filtered random field in anatomical coordinates).
* **Distractors** present in every class: 2-4 elongated, curved vessels inside the organ
  (quadratic Bezier tubes, bright or dark) and 0-2 small round nodules in the body *outside* the
  organ. They are drawn anew for every acquisition (the imaged slab and the bowel differ between
  studies), so they vary between a patient's images while the findings persist. Kidneys and
  nodules are kept clear of the organ's outline, lesions clear of the organ's outline, the spine,
  the vessels and each other, so the count is unambiguous in every image.
* **Findings**: the class is the number of small round focal lesions (spheres) inside the organ:
  ``normal`` (none), ``single_lesion`` (one) or ``multiple_lesions`` (two to four). The class
  priors are about 45 / 33 / 22 %. Lesion polarity (brighter or darker than the organ) and
  contrast vary per patient and lie in the same range as the vessels', so neither the mean
  intensity nor the presence of a bright or dark structure gives the label away: telling the
  classes apart needs shape (round versus elongated), location (inside versus outside the organ)
  and counting.

**Multi-label variant** (``task="multilabel"``, ``medcl synth --task multilabel``): three
independent yes/no findings per patient instead of the lesion count, ``lesion`` (lesions in the
organ), ``nodule`` (a round nodule outside it; no distractor nodules) and ``vessel`` (a fusiform
dilation of the patient's own vessel), each persistent across the patient's images;
``labels.csv`` is ``path,lesion,nodule,vessel`` with 1 or 0 per finding and ``cohort.json``
records ``"task": "multilabel"`` and the findings (:mod:`.multilabel`). The default cohort's files
are the same, byte for byte, as before the variant existed.

Each *image* is one acquisition of the phantom with its own pose (rotation, shift, scale), tissue
contrast, intensity drift, noise, tissue texture, vessels and nodules. What repeats across a
patient's images is the gross anatomy and the findings; this is the structure that patient-aware
contrastive pretraining (same-patient positives) can learn from unlabelled images:

* ``mr``: magnitude image (uint16) with a T1- or T2-like tissue weighting, a smooth multiplicative
  bias field and Rician noise (magnitude of a complex signal with Gaussian noise in both channels).
* ``ct``: Hounsfield units (air -1000, fat about -100, soft tissue 30-60, marrow 150-300, cortical
  bone about 700; lesions and vessels 20-60 HU from the organ), Gaussian noise and a small offset
  drift, stored as int16 with ``RescaleIntercept`` -1024.
* ``xr``: a projection radiograph (uint16): the analytic line integral of attenuation through the
  phantom's ellipsoids, spheres and tubes, with bright bones (spine and ribs), an anode-heel-like
  intensity gradient, a display gamma and Gaussian noise.

Layout: ``P0001/ST01/SE01/IM0001.dcm``. In 2D each patient has 3-5 studies of one single-image
series, all showing the phantom's z = 0 section with every lesion, vessel and nodule brought into
that plane, so a 2D image always shows all of the patient's findings. In 3D (``mr`` and ``ct``
only) each patient has one study with two series of ``max(8, size // 2)`` axial slices, one file
per slice, positioned along the slice normal at constant spacing. Folder and file names carry no
PHI.

Determinism: all randomness comes from :func:`numpy.random.default_rng` seeded with
``SeedSequence([seed, patient_index])``, and UIDs are derived from the seed with
:func:`pydicom.uid.generate_uid` and ``entropy_srcs``, so the same arguments give byte-identical
files, and a patient does not depend on how many other patients are generated. Anatomy and labels
depend only on the seed and the patient index, not on the modality, size or dimensionality.

Modules: :mod:`.spec` (classes, priors, modalities, the file names ``labels.csv`` and
``cohort.json``, the generator's version), :mod:`.geometry` (shapes and vectorised distances),
:mod:`.anatomy` (a patient's phantom), :mod:`.render` (cross-sections and projections),
:mod:`.multilabel` (the multi-label variant's findings), :mod:`.acquire` (pose, contrast, noise
per modality), :mod:`.phi` (fake PHI), :mod:`.dicom` (DICOM files), :mod:`.cohort`
(:func:`generate_cohort`). The package exports what a caller needs: :data:`CLASSES`,
:data:`CLASS_PRIORS`, :data:`FINDINGS`, :data:`MODALITIES`, :func:`generate_cohort` and
:class:`SynthSummary`.
"""

from __future__ import annotations

from medcl.data.synth.cohort import SynthSummary, generate_cohort
from medcl.data.synth.multilabel import FINDINGS
from medcl.data.synth.spec import CLASS_PRIORS, CLASSES, MODALITIES

__all__ = ["CLASSES", "CLASS_PRIORS", "FINDINGS", "MODALITIES", "SynthSummary", "generate_cohort"]
