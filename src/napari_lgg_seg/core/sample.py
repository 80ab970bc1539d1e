"""Sample data: one real LGG patient (downloaded once, verified, cached) and an offline phantom.

The real sample is patient ``TCGA_HT_7686_19950629`` of the LGG Segmentation Dataset
(Buda, Saha & Mazurowski; TCIA TCGA-LGG; Kaggle ``mateuszbuda/lgg-mri-segmentation``,
folder ``kaggle_3m``): 20 slices and their 20 masks, fetched file by file from a pinned
commit of a public GitHub mirror and checked against the size and sha256 of the original
files (``sample_files.csv``). Nothing here imports TensorFlow or Qt.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import Cancelled, LGGSegError
from .io import PatientStack, read_patient, temp_file_beside

SAMPLE_PATIENT = "TCGA_HT_7686_19950629"
SAMPLE_REPO = "TruongVanHien194276/Brain_Segmentation_data"
SAMPLE_COMMIT = "40bfc1f393feb039a3d3742ba9f536dc6d50d2b0"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{SAMPLE_REPO}/{SAMPLE_COMMIT}"
SAMPLE_FILES_CSV = Path(__file__).resolve().parent / "sample_files.csv"
ENV_CACHE = "NAPARI_LGG_SEG_CACHE"
ENV_BASE_URL = "NAPARI_LGG_SEG_SAMPLE_URL"
_CHUNK = 1 << 16

ProgressCallback = Callable[[int, int], "bool | None"]


class SampleDownloadError(LGGSegError):
    """The sample patient could not be downloaded or did not verify.

    ``offline`` is True when the server could not be reached at all.
    """

    def __init__(self, message: str, *, offline: bool = False):
        super().__init__(message)
        self.offline = offline


@dataclass(frozen=True)
class SampleFile:
    name: str
    size: int
    sha256: str


def sample_files() -> list[SampleFile]:
    """The pinned files of the sample patient (slices and masks) with size and sha256."""
    with open(SAMPLE_FILES_CSV, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["patient"] == SAMPLE_PATIENT]
    return [SampleFile(r["file"], int(r["size"]), r["sha256"].strip().lower()) for r in rows]


def cache_root() -> Path:
    """``$NAPARI_LGG_SEG_CACHE``, else ``$XDG_CACHE_HOME/napari-lgg-seg``, else
    ``~/.cache/napari-lgg-seg``."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "napari-lgg-seg"


def sample_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder that holds (or will hold) the cached sample patient."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    return root / "samples" / SAMPLE_PATIENT


def sample_base_url(base_url: str | None = None) -> str:
    return (base_url or os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")


def sample_url(name: str, base_url: str | None = None) -> str:
    return f"{sample_base_url(base_url)}/kaggle_3m/{SAMPLE_PATIENT}/{name}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_verified(path: Path, spec: SampleFile) -> bool:
    try:
        return path.stat().st_size == spec.size and _sha256(path) == spec.sha256
    except OSError:
        return False


def _offline_error(url: str, reason: object) -> SampleDownloadError:
    return SampleDownloadError(
        f"cannot download the sample patient: no network connection to {url.split('/kaggle_3m/')[0]} "
        f"({reason}). The synthetic phantom sample works offline "
        "(`napari-lgg-seg demo --offline`, or make_phantom()).",
        offline=True,
    )


def _download(url: str, spec: SampleFile, folder: Path, timeout: float) -> str | None:
    """Download one file to a temporary file, verify it and move it into place.

    Returns None on success or a message saying why the file was rejected (and deleted).
    Raises SampleDownloadError when the server cannot be reached.
    """
    fd, tmp = temp_file_beside(folder / spec.name, ".part")
    try:
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    for chunk in iter(lambda: resp.read(_CHUNK), b""):
                        size += len(chunk)
                        if size > spec.size:  # never store more than the pinned size
                            break
                        h.update(chunk)
                        out.write(chunk)
            except urllib.error.HTTPError as exc:
                return f"{url}: server answered HTTP {exc.code} {exc.reason}"
            except urllib.error.URLError as exc:
                raise _offline_error(url, exc.reason) from None
            except http.client.HTTPException as exc:
                return f"{url}: download failed ({type(exc).__name__}: {exc})"
            except (socket.timeout, TimeoutError, ConnectionError) as exc:
                raise _offline_error(url, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        if size != spec.size or h.hexdigest() != spec.sha256:
            got = f"more than {spec.size}" if size > spec.size else str(size)
            return (
                f"{spec.name}: downloaded file does not match the pinned original "
                f"(size {got} bytes, expected {spec.size}; sha256 "
                f"{h.hexdigest() if size <= spec.size else '?'}, expected {spec.sha256}); "
                f"it was deleted (from {url})"
            )
        os.replace(tmp, folder / spec.name)
        return None
    finally:
        if tmp.exists():
            tmp.unlink()


def load_sample_patient(
    progress: ProgressCallback | None = None,
    *,
    base_url: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    timeout: float = 20,
) -> PatientStack:
    """Download (once) and read the sample patient ``TCGA_HT_7686_19950629``.

    Files are fetched from ``<base_url>/kaggle_3m/<patient>/<file>`` (default: the pinned
    GitHub commit; env ``NAPARI_LGG_SEG_SAMPLE_URL`` overrides it) into
    ``<cache>/samples/<patient>/`` (``cache_dir``, else env ``NAPARI_LGG_SEG_CACHE``, else
    the user cache folder). Each file is written to a temporary name, checked against its
    pinned size and sha256 and only then renamed; cached files that verify are not
    downloaded again, cached files that do not are replaced. ``progress(done, total)`` is
    called after each file; returning False cancels (raises ``Cancelled``).

    Raises ``SampleDownloadError`` when offline or when a file does not verify.
    """
    specs = sample_files()
    folder = sample_dir(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SampleDownloadError(f"{folder}: cannot create the sample cache folder ({exc.strerror})") from None
    total = len(specs)
    rejected: list[str] = []
    for done, spec in enumerate(specs, start=1):
        target = folder / spec.name
        if not _is_verified(target, spec):
            if target.exists():
                target.unlink()  # a stale or damaged cached copy
            try:
                problem = _download(sample_url(spec.name, base_url), spec, folder, timeout)
            except OSError as exc:
                raise SampleDownloadError(f"{folder}: cannot write the sample file {spec.name} ({exc})") from None
            if problem:
                rejected.append(problem)
        if progress is not None and progress(done, total) is False:
            raise Cancelled(f"sample download cancelled after {done} of {total} files")
    if rejected:
        more = f" (and {len(rejected) - 1} more file(s))" if len(rejected) > 1 else ""
        raise SampleDownloadError(f"sample patient {SAMPLE_PATIENT}: {rejected[0]}{more}")
    return read_patient(folder)


# --------------------------------------------------------------------------- phantom


def make_phantom(n_slices: int = 16, size: int = 256, seed: int = 0) -> PatientStack:
    """A synthetic head in the kaggle_3m layout, made without network access.

    ``image`` is uint8 ``(n_slices, size, size, 3)`` with channels like the real data
    (pre-contrast, FLAIR, post-contrast) and similar grey values: a scalp rim, a dark bone
    gap, an elliptical brain with darker ventricles, and in the middle slices an irregular blob that is bright on FLAIR
    only (the abnormality). ``mask`` (uint8 0/1) marks the blob. The same arguments always
    give the same arrays.
    """
    if n_slices < 1 or size < 16:
        raise ValueError(f"phantom needs n_slices >= 1 and size >= 16, not {n_slices} and {size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) * 2 - 1  # [-1, 1]
    # z in [-1, 1] across the head; the brain is an ellipsoid, widest in the middle slices
    zs = np.linspace(-0.85, 0.85, n_slices) if n_slices > 1 else np.zeros(1)
    lesion_c = np.array([rng.uniform(-0.15, 0.15), rng.uniform(0.1, 0.3), rng.uniform(-0.28, -0.1)])
    lesion_r = np.array([0.45, rng.uniform(0.13, 0.17), rng.uniform(0.11, 0.15)])  # z, y, x radii
    lobes, phase = int(rng.integers(3, 6)), rng.uniform(0, 2 * np.pi)
    # smooth texture: a few random low-frequency waves, identical for a given seed
    waves = [(rng.uniform(2, 7), rng.uniform(2, 7), rng.uniform(0, 2 * np.pi)) for _ in range(4)]
    texture = sum(np.sin(a * xx * np.pi + b * yy * np.pi + p) for a, b, p in waves) / len(waves)
    noise = rng.normal(0.0, 1.0, size=(n_slices, size, size)).astype(np.float32)

    images = np.zeros((n_slices, size, size, 3), np.float32)
    masks = np.zeros((n_slices, size, size), np.uint8)
    for i, z in enumerate(zs):
        scale = np.sqrt(max(0.0, 1.0 - z**2)) + 1e-6
        r = np.sqrt((xx / (0.62 * scale)) ** 2 + (yy / (0.78 * scale)) ** 2)
        scalp = (r > 0.92) & (r <= 1.0)  # bright scalp fat on T1; the bone gap stays dark
        inside = r <= 0.85
        vent = ((np.abs(xx) - 0.07) / 0.05) ** 2 + ((yy + 0.05) / 0.18) ** 2 <= 1
        vent &= inside & (abs(z) < 0.45)
        # irregular lesion: ellipse in-plane whose radius wobbles with the angle
        dz = (z - lesion_c[0]) / lesion_r[0]
        lesion = np.zeros_like(inside)
        edema = np.zeros(inside.shape, np.float32)
        if abs(dz) < 1:
            k = np.sqrt(1 - dz**2)
            dy, dx = yy - lesion_c[1], xx - lesion_c[2]
            theta = np.arctan2(dy, dx)
            wobble = 1 + 0.18 * np.sin(lobes * theta + phase + 2 * z)
            rho = np.sqrt((dy / (lesion_r[1] * k)) ** 2 + (dx / (lesion_r[2] * k)) ** 2) / wobble
            lesion = (rho <= 1) & inside
            edema = np.clip(1.6 - rho, 0, 1) * inside  # FLAIR brightness fades outside the mask
        tex = 6 * texture + 3 * noise[i]
        pre = np.where(inside, 74 + tex, 0) + np.where(scalp, 150 + tex, 0) - np.where(vent, 45, 0)
        flair = np.where(inside, 70 + tex, 0) + np.where(scalp, 80 + tex, 0) - np.where(vent, 45, 0)
        flair = flair + 60 * edema + np.where(lesion, 25, 0)
        post = pre + np.where(lesion, 6, 0)
        images[i] = np.stack([pre, flair, post], axis=-1)
        masks[i] = lesion
    image = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    pid = f"PHANTOM_{seed}"
    return PatientStack(
        image=image,
        mask=masks,
        patient_id=pid,
        slice_files=tuple(f"{pid}_{i + 1}.tif" for i in range(n_slices)),
        source=None,
    )
