"""3D view of a patient for the README: the FLAIR as a grey volume under the labels.

    xvfb-run -a python scripts/screenshot_3d.py [--patient PATH] [--out docs/images/3d_view.png]

Opens a real kaggle_3m patient (../shared/data/lgg/kaggle_3m) with the plugin's reader,
adds its sequences as grey layers (FLAIR visible) and renders the ground truth over it.
kaggle_3m has no voxel size; ``--voxel-size`` (default 3 x 0.5 x 0.5 mm, typical of these
scans' FLAIR) only sets the aspect.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "lgg" / "kaggle_3m" / "TCGA_HT_7686_19950629"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--patient", default=str(REAL))
    ap.add_argument("--out", default=str(REPO / "docs" / "images" / "3d_view.png"))
    ap.add_argument("--voxel-size", type=float, nargs=3, default=(3.0, 0.5, 0.5))
    args = ap.parse_args()

    import napari

    from napari_lgg_seg.napari._layers import add_sequence_layers

    viewer = napari.Viewer(show=True)
    image, truth = viewer.open(args.patient, plugin="napari-lgg-seg")
    image.scale = truth.scale = tuple(args.voxel_size)
    flair = add_sequence_layers(viewer, image)[1]
    flair.rendering = "mip"
    flair.opacity = 0.6
    truth.opacity = 1.0
    viewer.dims.ndisplay = 3
    viewer.window.resize(900, 700)
    viewer.reset_view()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.angles = (-35, 25, 160)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    import imageio.v3 as iio

    iio.imwrite(args.out, shot)
    print(f"wrote {args.out} {shot.shape}")
    viewer.close()


if __name__ == "__main__":
    main()
