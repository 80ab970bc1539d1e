"""Voxel geometry and orientation: bring NIfTI/DICOM volumes to the kaggle_3m convention and back.

The model was trained on kaggle_3m slices: axial, the nose at the top of the image, the
patient's left on the image's right, slices ordered from feet to head. As voxel axis codes
of a ``(Z, Y, X)`` array in nibabel's RAS+ world that is ``("S", "P", "L")``. A source
volume with any voxel order is reoriented to that (a permutation and flips, never a
resampling), and labels go back to the source's own voxel grid, so they keep its affine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .errors import InputError

KAGGLE_AXCODES = ("S", "P", "L")


def _orientation():
    from nibabel import orientations

    return orientations


@dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels lie: the source's 4x4 voxel-to-RAS+ mm affine and grid shape.

    ``transform`` is nibabel's orientation transform from the source voxel axes to the
    kaggle ``(Z, Y, X)`` axes. ``unit_mm`` is the length of the affine's unit in mm (a NIfTI
    header may say metres or microns); the affine itself is kept as the source has it.
    ``nifti_xforms`` holds a NIfTI source's own qform and sform with their codes (both 0,
    or disagreeing), so that labels get the same header and overlay it in every viewer.
    """

    affine: np.ndarray
    source_shape: tuple[int, int, int]
    transform: np.ndarray
    source_format: str = "nifti"
    unit_mm: float = 1.0
    nifti_xforms: dict | None = None

    @classmethod
    def from_affine(cls, affine, shape, source_format: str = "nifti", unit_mm: float = 1.0,
                    nifti_xforms: dict | None = None) -> Geometry:
        o = _orientation()
        aff = np.asarray(affine, dtype=np.float64)
        if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
            raise InputError(f"affine {aff.tolist()} is not a finite 4x4 matrix")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise InputError("the voxel-to-world affine is singular (zero voxel size or collinear axes)")
        src = o.io_orientation(aff)
        transform = o.ornt_transform(src, o.axcodes2ornt(KAGGLE_AXCODES))
        return cls(aff, tuple(int(s) for s in shape[:3]), transform, source_format, float(unit_mm), nifti_xforms)

    @property
    def source_zooms(self) -> tuple[float, float, float]:
        """Voxel size in mm along the source voxel axes.

        Along the slice axis (a DICOM series' first, a NIfTI's third) it is the distance
        between slice planes: with a gantry tilt (a sheared grid) the step from one slice's
        origin to the next is longer, and would overstate the volume in mm^3.
        """
        cols = self.affine[:3, :3]
        zooms = np.sqrt((cols**2).sum(axis=0))
        s = 0 if self.source_format == "dicom" else 2
        j, k = (a for a in range(3) if a != s)
        zooms[s] = abs(np.linalg.det(cols)) / np.linalg.norm(np.cross(cols[:, j], cols[:, k]))
        return tuple(float(v) * self.unit_mm for v in zooms)

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        """Voxel size in mm along the kaggle (Z, Y, X) axes."""
        out = [0.0, 0.0, 0.0]
        for src_axis, (new_axis, _flip) in enumerate(self.transform):
            out[int(new_axis)] = round(self.source_zooms[src_axis], 6)  # headers store float32
        return tuple(out)

    @property
    def slice_tilt_deg(self) -> float:
        """Angle (degrees) between the slices' plane, as the model sees them, and the true
        axial plane: 0 for slices acquired axially, whatever their in-plane rotation or a
        gantry tilt (which slants the stack, not the planes)."""
        in_plane = [src for src, (new_axis, _flip) in enumerate(self.transform) if int(new_axis) != 0]
        normal = np.cross(self.affine[:3, in_plane[0]], self.affine[:3, in_plane[1]])
        cos = abs(normal[2]) / np.linalg.norm(normal)  # RAS+: S is the third world axis
        return float(np.degrees(np.arccos(np.clip(cos, 0.0, 1.0))))

    @property
    def source_axcodes(self) -> tuple[str, str, str]:
        o = _orientation()
        return tuple(o.aff2axcodes(self.affine))

    def to_kaggle(self, data: np.ndarray) -> np.ndarray:
        """Source-grid array (spatial axes first, then any channels) in kaggle (Z, Y, X) order."""
        self._check_shape(data.shape[:3], self.source_shape, "source")
        return np.ascontiguousarray(_orientation().apply_orientation(data, self.transform))

    def to_source(self, data: np.ndarray) -> np.ndarray:
        """Kaggle-ordered array (e.g. labels) back on the source's own voxel grid."""
        o = _orientation()
        self._check_shape(data.shape[:3], self.kaggle_shape, "kaggle-ordered")
        back = o.ornt_transform(o.axcodes2ornt(KAGGLE_AXCODES), o.io_orientation(self.affine))
        return np.ascontiguousarray(o.apply_orientation(data, back))

    @property
    def kaggle_shape(self) -> tuple[int, int, int]:
        out = [0, 0, 0]
        for src_axis, (new_axis, _flip) in enumerate(self.transform):
            out[int(new_axis)] = self.source_shape[src_axis]
        return tuple(out)

    @property
    def kaggle_affine(self) -> np.ndarray:
        """Voxel-to-world affine of the kaggle-ordered array."""
        return self.affine @ _orientation().inv_ornt_aff(self.transform, self.source_shape)

    def as_metadata(self) -> dict:
        """Plain (JSON-able) form for napari layer metadata."""
        return {
            "affine": self.affine.tolist(),
            "source_shape": list(self.source_shape),
            "source_format": self.source_format,
            "source_axcodes": "".join(self.source_axcodes),
            "unit_mm": self.unit_mm,
            "nifti_xforms": self.nifti_xforms,
        }

    @classmethod
    def from_metadata(cls, meta: dict) -> Geometry:
        return cls.from_affine(meta["affine"], meta["source_shape"], meta.get("source_format", "nifti"),
                               float(meta.get("unit_mm", 1.0)), meta.get("nifti_xforms"))

    @staticmethod
    def _check_shape(got, want, what) -> None:
        if tuple(got) != tuple(want):
            raise InputError(f"array of shape {tuple(got)} does not match the {what} grid {tuple(want)}")


OBLIQUE_NOTE_DEG = 15.0  # scans are often tilted a few degrees (e.g. to the AC-PC line); say so beyond this


def oblique_note(geometry: Geometry | None) -> str | None:
    """A warning when a volume's slices are far from axial (``slice_tilt_deg`` of at least
    ``OBLIQUE_NOTE_DEG``): they are segmented as they are, never resampled, and the model
    was trained on axial slices. None otherwise, or without a geometry."""
    if geometry is None:
        return None
    tilt = geometry.slice_tilt_deg
    if tilt < OBLIQUE_NOTE_DEG:
        return None
    return (f"oblique volume: its slices are {tilt:.0f} degrees from axial and are segmented as they are "
            "(not resampled); the model was trained on axial slices, so expect lower accuracy")


def kaggle_affine_from_voxel_size(voxel_size) -> np.ndarray:
    """RAS+ affine of a kaggle-ordered (Z, Y, X) array with this voxel size (no known origin)."""
    sz, sy, sx = check_voxel_size(voxel_size)
    return np.array(
        [[0.0, 0.0, -sx, 0.0], [0.0, -sy, 0.0, 0.0], [sz, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
    )


def check_voxel_size(voxel_size) -> tuple[float, float, float]:
    """A (Z, Y, X) voxel size in mm: three finite numbers above 0."""
    try:
        vs = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        raise InputError(f"voxel size {voxel_size!r} is not three numbers") from None
    if len(vs) != 3 or not all(np.isfinite(v) and 0 < v < 1e6 for v in vs):
        raise InputError(f"voxel size {voxel_size!r} must be three finite numbers above 0 (mm)")
    return vs


def parse_voxel_size(text: str | None) -> tuple[float, float, float] | None:
    """A voxel size typed by a user: ``"Z, Y, X"`` or one number for all three (mm);
    empty or 0 means unknown (None)."""
    t = (text or "").strip()
    parts = [v for v in re.split(r"[,;\s]+", t) if v]
    try:
        values = [float(v) for v in parts]
    except ValueError:
        raise InputError(f"voxel size {t!r} is not numbers; type 'Z, Y, X' in mm, e.g. '3, 0.5, 0.5'") from None
    if not values or all(v == 0 for v in values):
        return None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise InputError(f"voxel size {t!r} needs three numbers 'Z, Y, X' (mm) or one for all three")
    return check_voxel_size(values)
