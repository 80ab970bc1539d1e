"""Sample data: verified, cached download of the real sample patient (from a local HTTP
server, never the internet) and the offline phantom."""

from __future__ import annotations

import csv
import functools
import http.server
import shutil
import socket
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from napari_lgg_seg.core.errors import Cancelled, LGGSegError
from napari_lgg_seg.core.sample import (
    DEFAULT_BASE_URL,
    SAMPLE_COMMIT,
    SAMPLE_PATIENT,
    SAMPLE_REPO,
    SampleDownloadError,
    load_sample_patient,
    make_phantom,
    sample_dir,
    sample_files,
    sample_url,
)

from ..conftest import REAL_DATA, REPO

ORIGINALS = REPO.parent / "shared" / "data" / "lgg-original-sample"
ORIGINAL_PATIENT = ORIGINALS / "kaggle_3m" / SAMPLE_PATIENT

requires_originals = pytest.mark.skipif(
    not ORIGINAL_PATIENT.is_dir(),
    reason=f"original sample files not found at {ORIGINAL_PATIENT} (../shared is absent)",
)


class _Server:
    """A static HTTP server on 127.0.0.1 in a thread; records the paths it served."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = _Server(ORIGINALS)
    yield srv
    srv.close()


@pytest.fixture
def no_internet(monkeypatch):
    """Fail loudly if anything tries to reach a host other than 127.0.0.1."""
    real = urllib.request.urlopen

    def guarded(url, *args, **kwargs):
        target = url if isinstance(url, str) else url.full_url
        assert target.startswith("http://127.0.0.1:"), f"test tried to reach {target}"
        return real(url, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)


def _mirror(tmp_path: Path) -> Path:
    """A writable copy of the original files (the shared folder is read-only)."""
    root = tmp_path / "mirror"
    dest = root / "kaggle_3m" / SAMPLE_PATIENT
    dest.mkdir(parents=True)
    for f in ORIGINAL_PATIENT.iterdir():
        shutil.copyfile(f, dest / f.name)
    return root


def _unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- pinned data


def test_pinned_source_is_the_manifest_commit():
    assert DEFAULT_BASE_URL == f"https://raw.githubusercontent.com/{SAMPLE_REPO}/{SAMPLE_COMMIT}"
    assert sample_url(f"{SAMPLE_PATIENT}_3.tif") == (
        f"{DEFAULT_BASE_URL}/kaggle_3m/{SAMPLE_PATIENT}/{SAMPLE_PATIENT}_3.tif"
    )
    manifest = REAL_DATA / "MANIFEST.csv"
    if manifest.exists():
        with open(manifest, newline="") as fh:
            row = next(r for r in csv.DictReader(fh) if r["patient"] == SAMPLE_PATIENT)
        assert (row["source_repo"], row["source_commit"]) == (SAMPLE_REPO, SAMPLE_COMMIT)


def test_pinned_files_are_the_patients_20_slices_and_masks():
    files = sample_files()
    names = {f.name for f in files}
    assert len(files) == 40 and len(names) == 40
    for n in range(1, 21):
        assert f"{SAMPLE_PATIENT}_{n}.tif" in names and f"{SAMPLE_PATIENT}_{n}_mask.tif" in names
    assert all(len(f.sha256) == 64 and f.size > 0 for f in files)
    originals = REAL_DATA / "ORIGINAL_SHA256.csv"
    if originals.exists():
        with open(originals, newline="") as fh:
            ref = {r["file"].strip(): (int(r["size"]), r["sha256"].strip())
                   for r in csv.DictReader(fh) if r["patient"] == SAMPLE_PATIENT}
        assert ref == {f.name: (f.size, f.sha256) for f in files}


def test_cache_folder_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("NAPARI_LGG_SEG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sample_dir() == tmp_path / "xdg" / "napari-lgg-seg" / "samples" / SAMPLE_PATIENT
    monkeypatch.setenv("NAPARI_LGG_SEG_CACHE", str(tmp_path / "mine"))
    assert sample_dir() == tmp_path / "mine" / "samples" / SAMPLE_PATIENT
    assert sample_dir(tmp_path / "arg") == tmp_path / "arg" / "samples" / SAMPLE_PATIENT


# --------------------------------------------------------------------------- download


@requires_originals
def test_download_verify_and_cache(server, tmp_path, no_internet):
    calls = []
    st = load_sample_patient(lambda d, t: calls.append((d, t)), base_url=server.url, cache_dir=tmp_path)
    assert st.patient_id == SAMPLE_PATIENT
    assert st.image.shape == (20, 256, 256, 3) and st.image.dtype == np.uint8
    assert st.mask.shape == (20, 256, 256) and set(np.unique(st.mask)) == {0, 1}
    assert int(st.mask.reshape(20, -1).any(axis=1).sum()) == 10  # 10 slices with abnormality
    assert [f"{SAMPLE_PATIENT}_{n}.tif" for n in range(1, 21)] == list(st.slice_files)
    assert calls == [(i, 40) for i in range(1, 41)]
    assert len(server.requests) == 40
    assert all(r.startswith(f"/kaggle_3m/{SAMPLE_PATIENT}/") for r in server.requests)
    cached = sample_dir(tmp_path)
    for f in sample_files():  # byte-identical to the originals, no temporary files left
        assert (cached / f.name).read_bytes() == (ORIGINAL_PATIENT / f.name).read_bytes()
    assert sorted(p.name for p in cached.iterdir()) == sorted(f.name for f in sample_files())

    server.requests.clear()
    again = load_sample_patient(base_url=server.url, cache_dir=tmp_path)
    assert server.requests == []  # everything came from the cache
    np.testing.assert_array_equal(again.image, st.image)


@requires_originals
def test_env_overrides_url_and_cache(server, tmp_path, monkeypatch, no_internet):
    monkeypatch.setenv("NAPARI_LGG_SEG_SAMPLE_URL", server.url + "/")
    monkeypatch.setenv("NAPARI_LGG_SEG_CACHE", str(tmp_path / "c"))
    st = load_sample_patient()
    assert st.n_slices == 20
    assert (tmp_path / "c" / "samples" / SAMPLE_PATIENT / f"{SAMPLE_PATIENT}_20_mask.tif").is_file()


@requires_originals
def test_damaged_cached_file_is_replaced(server, tmp_path, no_internet):
    load_sample_patient(base_url=server.url, cache_dir=tmp_path)
    victim = sample_dir(tmp_path) / f"{SAMPLE_PATIENT}_7.tif"
    victim.write_bytes(b"not the original")
    server.requests.clear()
    load_sample_patient(base_url=server.url, cache_dir=tmp_path)
    assert server.requests == [f"/kaggle_3m/{SAMPLE_PATIENT}/{victim.name}"]
    assert victim.read_bytes() == (ORIGINAL_PATIENT / victim.name).read_bytes()


@requires_originals
def test_tampered_download_is_rejected_and_not_kept(tmp_path, no_internet):
    root = _mirror(tmp_path)
    bad = root / "kaggle_3m" / SAMPLE_PATIENT / f"{SAMPLE_PATIENT}_5.tif"
    data = bytearray(bad.read_bytes())
    data[5000] ^= 0xFF  # same size, one byte changed
    bad.write_bytes(bytes(data))
    srv = _Server(root)
    try:
        with pytest.raises(SampleDownloadError) as info:
            load_sample_patient(base_url=srv.url, cache_dir=tmp_path / "cache")
    finally:
        srv.close()
    msg = str(info.value)
    assert bad.name in msg and "does not match" in msg and "sha256" in msg and "deleted" in msg
    assert "\n" not in msg
    assert not info.value.offline
    cached = sample_dir(tmp_path / "cache")
    assert not (cached / bad.name).exists()
    assert not list(cached.glob(".*"))  # no temporary file left behind
    assert len(list(cached.glob("*.tif"))) == 39  # the good files are kept for next time


@requires_originals
def test_truncated_and_missing_files_are_rejected(tmp_path, no_internet):
    root = _mirror(tmp_path)
    short = root / "kaggle_3m" / SAMPLE_PATIENT / f"{SAMPLE_PATIENT}_2_mask.tif"
    short.write_bytes(short.read_bytes()[:1000])
    gone = root / "kaggle_3m" / SAMPLE_PATIENT / f"{SAMPLE_PATIENT}_9.tif"
    gone.unlink()
    srv = _Server(root)
    try:
        with pytest.raises(SampleDownloadError) as info:
            load_sample_patient(base_url=srv.url, cache_dir=tmp_path / "cache")
    finally:
        srv.close()
    msg = str(info.value)
    assert short.name in msg and "size 1000 bytes" in msg and "1 more file" in msg
    cached = sample_dir(tmp_path / "cache")
    assert not (cached / short.name).exists() and not (cached / gone.name).exists()


def test_offline_gives_a_clear_error(tmp_path, no_internet):
    url = f"http://127.0.0.1:{_unused_port()}"
    with pytest.raises(SampleDownloadError) as info:
        load_sample_patient(base_url=url, cache_dir=tmp_path, timeout=5)
    msg = str(info.value)
    assert info.value.offline and isinstance(info.value, LGGSegError)
    assert "no network" in msg and "phantom" in msg and "offline" in msg
    assert not list(sample_dir(tmp_path).iterdir())  # nothing half-written


@requires_originals
def test_progress_can_cancel(server, tmp_path, no_internet):
    with pytest.raises(Cancelled):
        load_sample_patient(lambda d, t: d < 3, base_url=server.url, cache_dir=tmp_path)
    assert len(server.requests) == 3


# --------------------------------------------------------------------------- phantom


def test_phantom_shapes_dtypes_and_content(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("make_phantom must not use the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    st = make_phantom()
    assert st.image.shape == (16, 256, 256, 3) and st.image.dtype == np.uint8
    assert st.mask.shape == (16, 256, 256) and st.mask.dtype == np.uint8
    assert set(np.unique(st.mask)) == {0, 1}
    assert st.n_slices == 16 and len(st.slice_files) == 16
    per_slice = st.mask.reshape(16, -1).sum(axis=1)
    assert per_slice[0] == 0 and per_slice[-1] == 0 and (per_slice > 0).sum() >= 4
    lesion = st.mask.astype(bool)
    flair, pre = st.image[..., 1].astype(float), st.image[..., 0].astype(float)
    brain = (flair > 60) & ~lesion
    assert flair[lesion].mean() > flair[brain].mean() + 50  # bright on FLAIR ...
    assert abs(pre[lesion].mean() - pre[brain & (pre < 150)].mean()) < 30  # ... not on pre-contrast
    assert st.image[:, 0, 0].max() == 0  # black background in the corners


def test_phantom_is_deterministic_and_sized():
    a, b = make_phantom(seed=3), make_phantom(seed=3)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    c = make_phantom(seed=4)
    assert not np.array_equal(a.image, c.image)
    small = make_phantom(n_slices=5, size=64, seed=1)
    assert small.image.shape == (5, 64, 64, 3) and small.mask.shape == (5, 64, 64)
    assert small.mask.any()
    with pytest.raises(ValueError):
        make_phantom(n_slices=0)
