"""npe2 sample data: one real LGG patient (downloaded once, then cached) and a phantom."""

from __future__ import annotations

from ._layers import stack_layer_data


def real_patient() -> list[tuple]:
    from napari.utils import progress

    from ..core.sample import load_sample_patient

    with progress(total=0, desc="Downloading the LGG sample patient") as bar:

        def report(done: int, total: int) -> None:
            if bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        stack = load_sample_patient(progress=report)
    return stack_layer_data(stack)


def phantom() -> list[tuple]:
    from ..core.sample import make_phantom

    return stack_layer_data(make_phantom())
