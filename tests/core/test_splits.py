import pytest

from napari_lgg_seg import InputError, split_patients
from napari_lgg_seg.core.splits import extend_split, institution

from ..conftest import REAL_PATIENTS, requires_real_data

IDS = [f"TCGA_{inst}_{i:04d}_2000" for inst in ("CS", "DU", "FG", "HT") for i in range(13)]


def test_no_patient_in_two_splits_and_deterministic():
    s = split_patients(IDS, 0.1, 0.2, seed=3)
    sets = [set(s[k]) for k in ("train", "val", "test")]
    assert sum(len(x) for x in sets) == len(IDS)
    assert set.union(*sets) == set(IDS)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert len(s["test"]) == 10 and len(s["val"]) == 5
    assert split_patients(IDS, 0.1, 0.2, seed=3) == s
    assert split_patients(IDS, 0.1, 0.2, seed=4) != s
    assert len({institution(p) for p in s["test"]}) >= 3  # stratified by institution


def test_bad_splits():
    with pytest.raises(InputError, match="too few"):
        split_patients(IDS[:2], 0.4, 0.5)
    with pytest.raises(InputError, match="not unique"):
        split_patients(IDS[:2] * 2)


@requires_real_data
def test_real_split_is_by_patient():
    ids = sorted(p.name for p in REAL_PATIENTS.iterdir() if p.is_dir())
    s = split_patients(ids, 0.1, 0.2, seed=0)
    assert not set(s["train"]) & set(s["test"]) and not set(s["val"]) & set(s["test"])


def test_extend_split_keeps_earlier_lists_and_splits_new_patients():
    old = split_patients(IDS[:26], 0.1, 0.2, seed=0)
    grown = extend_split(old, IDS, 0.15, 0.25, seed=0)
    for name in ("train", "val", "test"):
        assert set(old[name]) <= set(grown[name])
    new = set(IDS[26:])
    assert sorted(set().union(*map(set, grown.values()))) == sorted(IDS)
    assert len(set(grown["test"]) & new) == round(len(new) * 0.25)
    assert not set(grown["train"]) & set(grown["test"]) and not set(grown["val"]) & set(grown["test"])
    assert extend_split(old, IDS, 0.15, 0.25, seed=0) == grown
