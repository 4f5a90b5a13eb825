"""Fake protected health information (PHI) for the phantom's headers.

Names, birth dates, addresses, record and accession numbers, study dates and times, institutions
and staff, drawn from small invented vocabularies; they exist so that the de-identification code
has something real-looking to remove. Record numbers (MRN) and accession numbers are distinct for
every patient of a cohort.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np

# Fake PHI vocabularies. Invented combinations; any resemblance to a real person is a coincidence.
_FEMALE = tuple(
    "JANE MARY ANNA LINDA SUSAN KAREN EMMA OLIVIA SOFIA MARIA ELENA HANNA GRACE CHLOE NORA ALICE "
    "AMINA YUKI".split()
)
_MALE = tuple(
    "JOHN JAMES ROBERT MICHAEL DAVID PETER THOMAS LUCAS NOAH OMAR IVAN KENJI LIAM PAUL ADAM SAMUEL "
    "MATEO RAVI".split()
)
_SURNAMES = tuple(
    "DOE ROE SMITH JOHNSON GARCIA MUELLER ROSSI DUBOIS NOVAK TANAKA KIM SILVA OKAFOR NGUYEN "
    "KOWALSKI HANSEN EVANS MORENO PETROV COHEN SINGH BAKER LINDQVIST MORI".split()
)
_INSTITUTIONS = (
    "ST ELSEWHERE GENERAL HOSPITAL",
    "RIVERSIDE MEDICAL CENTER",
    "NORTHGATE CLINIC",
    "LAKEVIEW UNIVERSITY HOSPITAL",
    "MERCY REGIONAL IMAGING",
    "HILLCREST HEALTH",
)
_CITIES = ("SPRINGFIELD", "RIVERTON", "LAKESIDE", "FAIRVIEW", "MILLBROOK", "OAKDALE")
_STREETS = ("MAIN ST", "ELM ST", "OAK AVE", "PARK RD", "LAKE DR", "HILL ST", "MILL LN")


def _unique_number(index: int, salt: int, modulus: int, mult: int) -> int:
    """A number in ``[0, modulus)`` distinct for every ``index < modulus`` (``mult`` coprime)."""
    return (index * mult + salt) % modulus


@dataclass
class Phi:
    """One patient's fake PHI; the per-study lists are indexed by study."""

    name: str
    sex: str
    patient_id: str
    birth: date
    address: str
    study_dates: list[date]
    study_times: list[str]
    accessions: list[str]
    institutions: list[str]
    referrers: list[str]
    operators: list[str]


def sample_phi(rng: np.random.Generator, index: int, seed: int, n_studies: int) -> Phi:
    """Draw the fake PHI of patient ``index`` of the cohort of ``seed`` with ``n_studies`` studies.

    Args:
        rng: The patient's metadata generator.
        index: Patient index (0-based): makes the record and accession numbers distinct.
        seed: The cohort's seed.
        n_studies: Number of studies (dates, accession numbers, institutions, staff).

    Returns:
        The patient's :class:`Phi`.
    """
    female = bool(rng.integers(0, 2))
    first = str(rng.choice(_FEMALE if female else _MALE))
    last = str(rng.choice(_SURNAMES))
    salt = int(np.random.default_rng([seed, 7]).integers(0, 9_000_000))
    mrn = 1_000_000 + _unique_number(index, salt, 9_000_000, 7_654_321)
    first_study = date(2012, 1, 1) + timedelta(days=int(rng.integers(0, 11 * 365)))
    age_days = int(rng.integers(20 * 365, 86 * 365))
    birth = first_study - timedelta(days=age_days)
    dates, times, accs, insts, refs, ops = [], [], [], [], [], []
    current = first_study
    for j in range(n_studies):
        if j:
            current = current + timedelta(days=int(rng.integers(20, 400)))
        dates.append(current)
        times.append(
            f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}"
            f"{int(rng.integers(0, 60)):02d}"
        )
        acc = _unique_number(index * 8 + j, salt, 100_000_000, 48_271)
        accs.append(f"A{acc:08d}")
        insts.append(str(rng.choice(_INSTITUTIONS)))
        refs.append(f"{rng.choice(_SURNAMES)}^{rng.choice(_FEMALE + _MALE)}^^DR")
        ops.append(f"{rng.choice(_SURNAMES)}^{rng.choice(_FEMALE + _MALE)}")
    address = f"{int(rng.integers(1, 999))} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}"
    return Phi(
        f"{last}^{first}",
        "F" if female else "M",
        f"MRN{mrn:07d}",
        birth,
        address,
        dates,
        times,
        accs,
        insts,
        refs,
        ops,
    )
