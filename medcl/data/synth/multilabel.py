"""The multi-label phantom: three independent findings per patient (``medcl synth --task
multilabel``).

The single-label phantom asks how many lesions lie in the organ. This variant asks three yes/no
questions of the same anatomy, each drawn independently per patient with probability
:data:`FINDING_PRIORS` and persistent across the patient's images:

* ``lesion``: one, or two to four, round focal lesions inside the organ (the single-label
  phantom's lesions, same sizes, contrasts and placement rules).
* ``nodule``: one round nodule in the body outside the organ, clear of the organ's outline, the
  kidneys and the spine. The round distractor nodules of the single-label phantom are left out
  here, so that a round structure outside the organ always means the finding.
* ``vessel``: a fusiform dilation (an aneurysm) of the patient's own vessel: a short stretch of it,
  around its point deepest in the organ, widened to a radius of 0.055-0.07 (about 2 pixels at
  64 px against the vessel's 0.5-0.8), with the vessel's polarity and contrast. Every patient has
  that vessel, dilated or not, so its presence gives nothing away; it and its dilation are kept
  clear of the lesions, and the vessels redrawn for every acquisition (2-4, as in the single-label
  phantom) are kept clear of both the lesions and the dilation.

An elongated bulge *on* a vessel (vessel), a round spot inside the organ away from the vessels
(lesion) and a round spot outside the organ (nodule) are told apart by shape and location, the
same cues the single-label phantom needs. The findings depend only on the seed and the patient
index (not on the modality, the size or the dimensionality).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from medcl.data.synth.anatomy import (
    Anatomy,
    draw_vessel,
    kidney_fits,
    sample_gross_anatomy,
    sample_kidneys,
    sample_lesions,
    sample_ribs,
    sample_vessels,
)
from medcl.data.synth.geometry import (
    Ellipsoid,
    Sphere,
    Tube,
    ellipse_outline,
    ellipse_rho,
    polyline_distance,
)

FINDINGS: tuple[str, ...] = ("lesion", "nodule", "vessel")
"""The findings of the multi-label phantom, in column order."""

FINDING_PRIORS: tuple[float, ...] = (0.4, 0.35, 0.45)
"""Probability of each finding of :data:`FINDINGS` for a patient (drawn independently)."""

_DILATION_RADIUS = (0.055, 0.07)
"""Radius of the vessel finding's dilated stretch (normalised units)."""

_TRIES = 20
"""Draws of the patient's vessel before giving up."""

_NODULE_TRIES = 2000
"""Positions tried for the nodule finding before giving up."""


@dataclass
class FindingsAnatomy(Anatomy):
    """A patient of the multi-label phantom: :class:`Anatomy` plus its findings.

    ``label`` holds the findings as bits (bit ``k`` = finding ``k`` present); ``lesions`` are the
    lesion finding's lesions (none when absent).
    """

    findings: tuple[int, ...] = ()  # 1/0 per finding of FINDINGS
    main_vessel: Tube | None = None  # the patient's own vessel, in every image
    dilation: Tube | None = None  # the vessel finding, on main_vessel
    nodule: Sphere | None = None  # the nodule finding


def sample_findings_anatomy(rng: np.random.Generator) -> FindingsAnatomy:
    """Draw one patient of the multi-label phantom (uses only ``rng``)."""
    findings = tuple(int(rng.uniform() < p) for p in FINDING_PRIORS)
    body, fat_inner, organ, spine = sample_gross_anatomy(rng)
    kidneys = sample_kidneys(rng, body, fat_inner, organ)
    lesions: list[Sphere] = []
    if findings[0]:
        lesions, grown = sample_lesions(rng, 1 + int(rng.integers(0, 2)), organ, spine)
        if grown:
            kidneys = [k for k in kidneys if kidney_fits(k, organ, body, fat_inner)]
    # the patient's vessel, clear of the lesions; with the vessel finding, a vessel with a stretch
    # clear of them by enough for its dilation
    radius = float(rng.uniform(*_DILATION_RADIUS))
    main, dilation = None, None
    for _ in range(_TRIES):
        main = draw_vessel(rng, organ, lesions)
        if main is not None and findings[2]:
            dilation = _dilate(main, organ, lesions, radius)
        if main is not None and (dilation is not None or not findings[2]):
            break
    if main is None or (findings[2] and dilation is None):  # a clear line, not a wrong label
        raise RuntimeError("multi-label phantom: no room for the patient's vessel")
    contrast = float(rng.uniform(0.4, 0.55))
    main = replace(main, contrast=contrast)
    dilation = replace(dilation, contrast=contrast) if dilation is not None else None
    label = sum(f << k for k, f in enumerate(findings))
    ribs = sample_ribs(rng)
    parts = (label, body, fat_inner, organ, kidneys, spine, [], [], lesions, ribs)
    texture_seed = int(rng.integers(0, 2**31 - 1))
    anat = FindingsAnatomy(
        *parts, texture_seed, findings=findings, main_vessel=main, dilation=dilation
    )
    if findings[1]:
        anat.nodule = _place_nodule(anat, rng)
    return anat


def _dilate(vessel: Tube, organ: Ellipsoid, lesions: list[Sphere], radius: float) -> Tube | None:
    """The dilated stretch of ``vessel`` (two of its segments, ``radius`` wide) around its point
    deepest in the organ that is clear of every lesion by 0.05; None when no point is."""
    pts = vessel.points
    order = sorted(range(2, len(pts) - 2), key=lambda i: ellipse_rho(organ, pts[i]))
    for centre in order:
        stretch = pts[centre - 1 : centre + 2]
        clear = all(
            polyline_distance(stretch, les.center[None, :2], 10.0)[0] > les.radius + radius + 0.05
            for les in lesions
        )
        if clear:
            return Tube(stretch, radius, vessel.sign, vessel.contrast)
    return None


def _place_nodule(anat: Anatomy, rng: np.random.Generator) -> Sphere:
    """The nodule finding: a round nodule inside the body wall, outside the organ.

    Kept at least 0.05 from the organ's outline, the spine and the kidneys and 0.03 inside the
    inner body surface, distances measured to densely sampled outlines (the single-label phantom's
    distractors use a more cautious bound that leaves no room in a quarter of the patients).
    """
    body, organ, spine = anat.body, anat.organ, anat.spine
    inner = Ellipsoid(body.center, body.axes * anat.fat_inner, body.angle)
    organ_rim, body_rim = ellipse_outline(organ, 96)[:, :2], ellipse_outline(inner, 96)[:, :2]
    for _ in range(_NODULE_TRIES):
        r = float(rng.uniform(0.065, 0.085))
        p = body.center + np.array(
            [rng.uniform(-1, 1) * inner.axes[0], rng.uniform(-1, 1) * inner.axes[1], 0.0]
        )
        if ellipse_rho(inner, p) >= 1 or ellipse_rho(organ, p) <= 1:
            continue
        if np.hypot(*(organ_rim - p[:2]).T).min() < r + 0.05:
            continue
        if np.hypot(*(body_rim - p[:2]).T).min() < r + 0.03:
            continue
        if np.hypot(*(p[:2] - spine.center[:2])) < spine.radius + r + 0.05:
            continue
        if any(ellipse_rho(k, p) < 1 + (r + 0.04) / min(k.axes[:2]) for k in anat.kidneys):
            continue
        p[2] = rng.uniform(-0.4, 0.4)
        sign = float(rng.choice([-1.0, 1.0]))
        return Sphere(p, r, sign, float(rng.uniform(0.4, 0.55)))
    raise RuntimeError("multi-label phantom: no room for the nodule finding")


def redraw_findings_distractors(anat: FindingsAnatomy, rng: np.random.Generator) -> Anatomy:
    """The phantom of one acquisition: the patient's vessel (and dilation, nodule) and this
    acquisition's other vessels, clear of the lesions and of the dilation; no distractor
    nodules."""
    avoid = list(anat.lesions)
    own = [anat.main_vessel] if anat.main_vessel is not None else []
    if anat.dilation is not None:
        d = anat.dilation
        own.append(d)
        avoid += [Sphere(p, d.radius, 1.0, 1.0) for p in d.points]
    return replace(
        anat,
        vessels=own + sample_vessels(rng, anat.organ, avoid),
        nodules=[anat.nodule] if anat.nodule is not None else [],
    )
