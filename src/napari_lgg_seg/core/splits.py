"""Patient-level splits: a patient is in exactly one of train / validation / test."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from .errors import InputError


def institution(patient_id: str) -> str:
    """Contributing institution code of a TCGA id (``TCGA_HT_7686_...`` -> ``HT``)."""
    parts = patient_id.split("_")
    return parts[1] if len(parts) > 2 and parts[0] == "TCGA" else "?"


def split_patients(
    patient_ids: Sequence[str], val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[str]]:
    """Split patient ids into ``train``/``val``/``test`` lists, stratified by institution.

    The same ids and seed always give the same split; no id is in two lists.
    """
    ids = sorted(set(patient_ids))
    if len(ids) != len(patient_ids):
        raise InputError("patient ids are not unique")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InputError(f"bad split fractions: val {val_fraction}, test {test_fraction}")
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = defaultdict(list)
    for pid in ids:
        groups[institution(pid)].append(pid)
    ordered: list[str] = []
    for key in sorted(groups):
        members = groups[key]
        ordered.extend(members[i] for i in rng.permutation(len(members)))
    # deal stratified positions: every k-th patient of the institution-ordered list
    n = len(ordered)
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    if n == 0:
        raise InputError("no patients to split")
    if n - n_test - n_val < 1:
        raise InputError(
            f"{n} patient(s) are too few for a split with {n_val} validation and {n_test} test patient(s); "
            "lower the validation/test fractions"
        )
    offset = int(rng.integers(0, max(1, n // max(1, n_test + n_val))))
    held = [ordered[(p + offset) % n] for p in np.linspace(0, n, num=n_test + n_val, endpoint=False).astype(int)]
    test: list[str] = []
    val: list[str] = []
    for i, pid in enumerate(held):
        if len(test) < n_test and (i % 2 == 0 or len(val) >= n_val):
            test.append(pid)
        else:
            val.append(pid)
    train = [p for p in ordered if p not in test and p not in val]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def extend_split(
    previous: dict[str, Sequence[str]], patient_ids: Sequence[str], val_fraction: float = 0.1,
    test_fraction: float = 0.2, seed: int = 0,
) -> dict[str, list[str]]:
    """Grow an earlier split to more patients without moving anyone.

    Patients of ``previous`` keep their list; the new ones are split on their own
    (stratified by institution, ``split_patients``) and appended, so a test patient of
    the earlier model stays a test patient and no new test patient was seen by it.
    """
    old = {pid: name for name in ("train", "val", "test") for pid in previous.get(name, [])}
    new = sorted(set(patient_ids) - set(old))
    parts = split_patients(new, val_fraction, test_fraction, seed) if new else {"train": [], "val": [], "test": []}
    present = set(patient_ids)
    return {
        name: sorted([p for p, n in old.items() if n == name and p in present] + parts[name])
        for name in ("train", "val", "test")
    }
