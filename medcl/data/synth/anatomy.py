"""A patient's phantom: body, organ, spine, kidneys, vessels, nodules, lesions and ribs.

:func:`sample_anatomy` draws the parts that persist across a patient's images (the gross anatomy
and the findings, the lesions); :func:`redraw_distractors` replaces the vessels and nodules for one
acquisition. Placement rules keep every structure unambiguous: kidneys and nodules clear of the
organ's outline, lesions clear of the outline, the spine, the vessels and each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from medcl.data.synth.geometry import (
    Ellipsoid,
    Sphere,
    Tube,
    bezier,
    ellipse_outline,
    ellipse_rho,
    ellipsoid_point,
    polyline_distance,
)
from medcl.data.synth.spec import CLASS_PRIORS, CLASSES


@dataclass
class Anatomy:
    """One patient's phantom in normalised anatomical coordinates (see the package docstring)."""

    label: int
    body: Ellipsoid
    fat_inner: float  # inner body surface as a fraction of the outer one
    organ: Ellipsoid
    kidneys: list[Ellipsoid]
    spine: Sphere  # a cylinder along z; its radius is the cortical (outer) radius
    vessels: list[Tube]
    nodules: list[Sphere]  # round distractors outside the organ
    lesions: list[Sphere]  # the findings: inside the organ
    ribs: list[Tube]  # projection (xr) only
    texture_seed: int


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's phantom. Uses only ``rng``, so it is the same for every modality."""
    label = int(rng.choice(len(CLASSES), p=CLASS_PRIORS))
    body, fat_inner, organ, spine = sample_gross_anatomy(rng)
    kidneys = sample_kidneys(rng, body, fat_inner, organ)
    lesions, grown = sample_lesions(rng, label, organ, spine)
    if grown:  # the organ grew to make room for the lesions
        kidneys = [k for k in kidneys if kidney_fits(k, organ, body, fat_inner)]
    vessels = sample_vessels(rng, organ, lesions)
    nodules = sample_nodules(rng, body, fat_inner, organ, spine, kidneys)
    ribs = sample_ribs(rng)
    return Anatomy(
        label,
        body,
        fat_inner,
        organ,
        kidneys,
        spine,
        vessels,
        nodules,
        lesions,
        ribs,
        int(rng.integers(0, 2**31 - 1)),
    )


def redraw_distractors(anat: Anatomy, rng: np.random.Generator) -> Anatomy:
    """The phantom with this acquisition's vessels and nodules (the rest is the patient's)."""
    return replace(
        anat,
        vessels=sample_vessels(rng, anat.organ, anat.lesions),
        nodules=sample_nodules(
            rng, anat.body, anat.fat_inner, anat.organ, anat.spine, anat.kidneys
        ),
    )


def sample_gross_anatomy(
    rng: np.random.Generator,
) -> tuple[Ellipsoid, float, Ellipsoid, Sphere]:
    """Body, inner fat surface (fraction of the body), organ and spine."""
    # The gross anatomy of this standardised single-organ protocol varies little between
    # patients; what tells two patients apart is in the organ: vessels, nodules, findings.
    body = Ellipsoid(
        center=np.array([rng.normal(0, 0.01), rng.normal(0, 0.01), 0.0]),
        axes=np.array([rng.uniform(0.8, 0.84), rng.uniform(0.63, 0.67), rng.uniform(2.0, 3.0)]),
        angle=float(rng.normal(0, 0.02)),
    )
    fat_inner = float(rng.uniform(0.88, 0.9))
    bx, by = body.axes[0], body.axes[1]

    organ = Ellipsoid(
        center=body.center
        + np.array([rng.uniform(-0.03, 0.03) * bx, rng.uniform(-0.12, -0.08) * by, 0.0]),
        axes=np.array(
            [rng.uniform(0.55, 0.59) * bx, rng.uniform(0.6, 0.64) * by, rng.uniform(0.6, 0.75)]
        ),
        angle=float(rng.uniform(-0.1, 0.1)),
    )

    spine_r = float(rng.uniform(0.085, 0.11))
    spine = Sphere(
        center=body.center + np.array([rng.normal(0, 0.02), by * fat_inner - spine_r * 1.6, 0.0]),
        radius=spine_r,
        sign=1.0,
        contrast=1.0,
    )
    return body, fat_inner, organ, spine


def kidney_fits(kidney: Ellipsoid, organ: Ellipsoid, body: Ellipsoid, fat_inner: float) -> bool:
    """Whether a kidney lies clear of the organ and inside the body wall."""
    rim = ellipse_outline(kidney)
    return all(ellipse_rho(organ, q) > 1 + 0.06 / min(organ.axes[:2]) for q in rim) and all(
        ellipse_rho(body, q) < fat_inner - 0.04 / min(body.axes[:2]) for q in rim
    )


def sample_kidneys(
    rng: np.random.Generator, body: Ellipsoid, fat_inner: float, organ: Ellipsoid
) -> list[Ellipsoid]:
    """Up to two kidneys (see the comment inside)."""
    # Kidneys: posterolateral, clear of the organ (a round blob on the organ's edge would read as a
    # finding) and inside the body wall; a kidney with no room is left out.
    bx, by = body.axes[0], body.axes[1]
    kidneys = []
    for side in (-1.0, 1.0):
        for _ in range(30):
            kidney = Ellipsoid(
                center=body.center
                + np.array([side * rng.uniform(0.4, 0.6) * bx, rng.uniform(0.15, 0.45) * by, 0.0]),
                axes=np.array(
                    [rng.uniform(0.08, 0.12), rng.uniform(0.12, 0.17), rng.uniform(0.25, 0.35)]
                ),
                angle=float(side * rng.uniform(0.2, 0.6)),
            )
            if kidney_fits(kidney, organ, body, fat_inner):
                kidneys.append(kidney)
                break
    return kidneys


def sample_lesions(
    rng: np.random.Generator, label: int, organ: Ellipsoid, spine: Sphere
) -> tuple[list[Sphere], int]:
    """The class's lesions, and how often the organ was enlarged (in place) to fit them."""
    # Findings: the patient's lesion polarity and contrast are shared by all of their lesions.
    # Lesions lie inside the organ, clear of its outline, of the spine and of each other (a gap of
    # at least 0.12, about 4 pixels at 64 px). A crowded draw is restarted with smaller lesions
    # (radius down to 0.08), then, rarely, with a slightly larger organ.
    n_lesions = (0, 1, int(rng.integers(2, 5)))[label]  # draws the count for every class
    polarity = float(rng.choice([-1.0, 1.0]))
    strength = float(rng.uniform(0.3, 0.55))
    lesions: list[Sphere] = []
    shrink, grown = 1.0, 0
    while len(lesions) < n_lesions:
        lesions = []
        for _ in range(200):
            r = float(rng.uniform(0.1, 0.13)) * shrink
            angle, radial = rng.uniform(0, 2 * math.pi), 0.8 * math.sqrt(rng.uniform())
            u = np.array(
                [radial * math.cos(angle), radial * math.sin(angle), rng.uniform(-0.45, 0.45)]
            )
            # Inside the organ in 3D too, so that no slice of a volume clips a lesion.
            if np.linalg.norm(u) > 1 - (r + 0.03) / min(organ.axes):
                continue
            p = ellipsoid_point(organ, u)
            if np.hypot(*(p[:2] - spine.center[:2])) < spine.radius * 1.2 + r + 0.03:
                continue
            if any(np.hypot(*(p[:2] - q.center[:2])) < r + q.radius + 0.12 for q in lesions):
                continue
            jitter = float(rng.uniform(0.9, 1.1))
            lesions.append(Sphere(p, r, polarity, min(strength * jitter, 0.7)))
            if len(lesions) == n_lesions:
                break
        if shrink > 0.08 / 0.1:
            shrink *= 0.97
        else:
            organ.axes[:2] *= 1.02
            grown += 1
    return lesions, grown


def sample_ribs(rng: np.random.Generator) -> list[Tube]:
    """Ribs (projection only): gently curved bands across the image."""
    ribs = []
    y0 = rng.uniform(-0.95, -0.75)
    gap = rng.uniform(0.2, 0.26)
    for i in range(int(rng.integers(4, 7))):
        y = y0 + i * gap
        for side in (-1.0, 1.0):
            inner = np.array([side * 0.12, y, 0.0])
            bend = np.array([side * 0.55, y - 0.12, 0.0])
            outer = np.array([side * 0.95, y + rng.uniform(0.05, 0.2), 0.0])
            ribs.append(Tube(bezier(inner, bend, outer), float(rng.uniform(0.022, 0.03)), 1.0, 1.0))
    return ribs


def sample_vessels(rng: np.random.Generator, organ: Ellipsoid, lesions: list[Sphere]) -> list[Tube]:
    """2-4 vessels in the organ, clear of the lesions (:func:`draw_vessel`)."""
    vessels = []
    for _ in range(int(rng.integers(2, 5))):
        vessel = draw_vessel(rng, organ, lesions)
        if vessel is not None:
            vessels.append(vessel)
    return vessels


def draw_vessel(rng: np.random.Generator, organ: Ellipsoid, avoid: list[Sphere]) -> Tube | None:
    """One vessel in the organ clear of the spheres ``avoid``, or None (see the comment inside)."""
    # Vessels: thin and long, never round; either crossing the organ from its surface inwards or
    # arching along its periphery. A vessel must pass clear of the lesions (a lesion on a vessel
    # reads as a branch point), else it is redrawn; one that cannot be placed is left out.
    for attempt in range(60):
        a0 = rng.uniform(0, 2 * math.pi)
        z = rng.uniform(-0.5, 0.5, 3)
        if rng.uniform() < 0.5 - attempt / 60:  # crossing
            a1 = a0 + math.pi + rng.uniform(-1.2, 1.2)
            r0, r1 = 0.95, rng.uniform(0.2, 0.6)
            am, rm = (a0 + a1) / 2 + rng.uniform(-0.5, 0.5), rng.uniform(0.0, 0.5)
        else:  # peripheral arc
            a1 = a0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.9, 1.8)
            r0, r1 = 0.95, rng.uniform(0.65, 0.85)
            am, rm = (a0 + a1) / 2, rng.uniform(0.8, 0.95)
        ctrl = [
            np.array([r * math.cos(a), r * math.sin(a), zz])
            for r, a, zz in ((r0, a0, z[0]), (rm, am, z[1]), (r1, a1, z[2]))
        ]
        pts = bezier(*(ellipsoid_point(organ, q) for q in ctrl))
        radius = float(rng.uniform(0.016, 0.026))
        if all(
            polyline_distance(pts, les.center[None, :2], 10.0)[0] > les.radius + radius + 0.03
            for les in avoid
        ):
            sign = float(rng.choice([-1.0, 1.0]))
            return Tube(pts, radius, sign, float(rng.uniform(0.2, 0.5)))
    return None


def sample_nodules(
    rng: np.random.Generator,
    body: Ellipsoid,
    fat_inner: float,
    organ: Ellipsoid,
    spine: Sphere,
    kidneys: list[Ellipsoid],
) -> list[Sphere]:
    """0-2 round distractors in the body outside the organ (see the comment inside)."""
    bx, by = body.axes[0], body.axes[1]
    # Round distractors outside the organ but inside the body (lymph nodes, bowel loops), clear of
    # the organ's outline, the kidneys and the spine.
    nodules: list[Sphere] = []
    n_nodules = int(rng.integers(0, 3))
    tries = 0
    while len(nodules) < n_nodules and tries < 600:
        tries += 1
        r = float(rng.uniform(0.065, 0.1))
        p = body.center + np.array(
            [rng.uniform(-0.9, 0.9) * bx * fat_inner, rng.uniform(-0.9, 0.9) * by * fat_inner, 0.0]
        )
        if ellipse_rho(body, p) > fat_inner - (r + 0.04) / min(bx, by):
            continue
        if ellipse_rho(organ, p) < 1 + (r + 0.07) / min(organ.axes[:2]):
            continue
        if np.hypot(*(p[:2] - spine.center[:2])) < spine.radius + r + 0.05:
            continue
        if any(ellipse_rho(k, p) < 1 + (r + 0.04) / min(k.axes[:2]) for k in kidneys):
            continue
        if any(np.hypot(*(p[:2] - q.center[:2])) < r + q.radius + 0.05 for q in nodules):
            continue
        p[2] = rng.uniform(-0.4, 0.4)
        nodules.append(Sphere(p, r, float(rng.choice([-1.0, 1.0])), float(rng.uniform(0.25, 0.5))))
    return nodules
