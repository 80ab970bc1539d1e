"""Choose the bundled model's threshold and 3D post-processing on the validation patients,
decide whether it ships, then score the held-out test patients once (every figure of
MODEL_CARD.md comes from here).

    python scripts/evaluate_bundled.py select --model runs/bundled2/phase5.keras \
        --split runs/bundled2/split-2.0.json --baseline runs/bundled2/phase4.keras --out runs/bundled2/eval
    python scripts/evaluate_bundled.py test --split runs/bundled2/split-2.0.json \
        --baseline runs/bundled2/phase4.keras --out runs/bundled2/eval

``select`` scores every (threshold, post-processing) pair of the grid below on the
validation patients (all three sequences), from one pass of the network per patient.
Rule, fixed before the 2.0 run ended: the pair with the highest mean per-patient Dice
wins; pairs within 0.005 of it count as ties and go to the simplest (threshold 0.5
first, then none < min_size < largest < peak < mean, then the smaller parameter).
Ship rule, fixed before the 2.0 run ended: 2.0 ships if, on the validation patients,
its mean per-patient Dice with the chosen settings is at least the baseline's (1.1, with
1.1's shipped defaults: threshold 0.5, no post-processing) both with all sequences and
with FLAIR alone. Test patients are used for no choice. ``val_leave_one_out`` in the selection reports the
selection's own nested leave-one-out estimate (each validation patient scored with the
setting the rule picks on the others), which the plain validation mean overstates.

``select --flair-only`` does the same for the FLAIR-only companion (``--model``), on the
validation patients with FLAIR alone; its ship rule (``docs/training/flair-model/rule.txt``,
fixed before it was trained): its mean per-patient Dice with the chosen settings is at least
the main model's FLAIR-only figure (``--main-selection``, that model's own select) + 0.02.

``test`` scores the bundled model as users get it and the baseline on the test patients,
with all sequences and with FLAIR alone, and writes the reports. The bundled model runs
through ``resolve_model``: FLAIR-only stacks go to its FLAIR-only companion when it has
one, and each patient is scored with the threshold and post-processing of the network
that segmented it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_lgg_seg.core.evaluation import PatientScore, summarize
from napari_lgg_seg.core.inference import model_label, predict_probabilities, resolve_model
from napari_lgg_seg.core.io import atomic_write, read_patient
from napari_lgg_seg.core.metrics import dice, iou
from napari_lgg_seg.core.model import load_model, model_name
from napari_lgg_seg.core.postprocess import NONE, PostProcessing, describe_settings, keep_components, model_defaults
from napari_lgg_seg.core.overview import flair_channel

THRESHOLDS = (0.5, 0.4, 0.6)
GRID = (
    [NONE]
    + [PostProcessing("min_size", n) for n in (100, 300, 1000)]
    + [PostProcessing("largest")]
    + [PostProcessing("peak", 0, p) for p in (0.7, 0.8, 0.9, 0.95)]
    + [PostProcessing("mean", 0, p) for p in (0.6, 0.7, 0.8)]
)
TIE = 0.005
FLAIR_MARGIN = 0.02  # the companion must beat the main model with FLAIR alone by this much


def probabilities(model, data: Path, patients: list[str], flair_only: bool, routed: bool = False,
                  flip_tta: bool = False) -> dict:
    """Per patient: (ground truth, probabilities, network) from one pass of the network.
    ``routed``: the bundled model as users get it (``resolve_model`` picks the network)."""
    out = {}
    for pid in patients:
        st = read_patient(data / pid)
        image = flair_channel(st.image) if flair_only else st.image
        net = resolve_model(image, model) if routed else model
        out[pid] = (st.mask > 0, predict_probabilities(image, net, flair_model=False, flip_tta=flip_tta), net)
    return out


def score(probs: dict, threshold: float | None, post: PostProcessing | None) -> tuple[list[PatientScore], dict]:
    """Per-patient scores and their summary; ``None`` settings: each network's own."""
    scores, truths, preds = [], [], []
    for pid, (truth, p, net) in probs.items():
        t, pp = model_defaults(net) if threshold is None else (threshold, post)
        pred = keep_components(p >= t, p, pp)
        scores.append(PatientScore(pid, int(truth.shape[0]), dice(truth, pred), iou(truth, pred),
                                   int(truth.sum()), int(pred.sum())))
        truths.append(truth)
        preds.append(pred)
    return scores, summarize(scores, truths, preds)


def report(name: str, threshold: float, post: PostProcessing, scores, summary, flair_only: bool) -> dict:
    return {"model": name, "threshold": threshold, "postprocessing": post.to_dict(),
            "postprocessing_text": post.describe(), "flair_only": flair_only,
            "patients": [vars(s) for s in scores], "summary": summary}


def write_json(path: Path, obj) -> None:
    text = json.dumps(obj, indent=1, default=lambda v: None)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def choose(grid: list[dict], leave_out: str | None = None) -> dict:
    """The grid entry the rule picks (best mean, ties within TIE to the simplest), the
    mean taken without patient ``leave_out`` when given."""
    def mean(g):
        return float(np.mean([d for p, d in g["val_patients_dice"].items() if p != leave_out]))

    best = max(mean(g) for g in grid)
    return min((g for g in grid if mean(g) >= best - TIE), key=lambda g: g["simplicity"])


def leave_one_out(grid: list[dict]) -> dict:
    """How well the selection itself generalises: each validation patient scored with the
    setting the rule picks on the other patients (nested leave-one-out). Its mean is an
    honest estimate of the chosen setting on new patients; the plain validation mean of
    the chosen setting is optimistic, as the choice saw those patients."""
    per_patient, picks = {}, {}
    for pid in grid[0]["val_patients_dice"]:
        g = choose(grid, leave_out=pid)
        per_patient[pid] = g["val_patients_dice"][pid]
        picks[pid] = f"t={g['threshold']} {g['text']}"
    return {"dice_mean": float(np.mean(list(per_patient.values()))), "dice_min": float(min(per_patient.values())),
            "patients_dice": per_patient, "settings_picked": picks,
            "distinct_settings": sorted(set(picks.values()))}


class MeanOf:
    """Several models of one input format as one: the mean of their probabilities (an
    ensemble candidate for ``select``)."""

    def __init__(self, models: list):
        if len({tuple(m.input_shape) for m in models}) != 1:
            raise SystemExit("ensemble members must take the same input")
        self.models, self.input_shape = models, models[0].input_shape
        self.name = " + ".join(model_name(m) for m in models)
        self.lgg_info = {"name": self.name, "version": "ensemble"}

    def predict_on_batch(self, x):
        return np.mean([np.asarray(m.predict_on_batch(x), np.float32) for m in self.models], axis=0)


def load_candidate(paths: list[str]):
    """The candidate of ``select``: one .keras model, or the mean of several."""
    return load_model(paths[0]) if len(paths) == 1 else MeanOf([load_model(p) for p in paths])


def cmd_select(args) -> int:
    split = json.loads(Path(args.split).read_text())
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_candidate(args.model)
    val = split["val"]
    probs = probabilities(model, data, val, flair_only=args.flair_only, flip_tta=args.flip_tta)
    grid = []
    for rank_t, t in enumerate(THRESHOLDS):
        for rank_p, post in enumerate(GRID):
            scores_tp, summary_tp = score(probs, t, post)
            d = summary_tp["dice_mean"]
            grid.append({"threshold": t, "postprocessing": post.to_dict(), "text": post.describe(),
                         "val_dice_mean": d, "simplicity": (rank_t, rank_p),
                         "val_patients_dice": {s.patient: s.dice for s in scores_tp}})
            print(f"val t={t} {post.describe()}: {d:.4f}", flush=True)
    chosen = choose(grid)
    t, post = chosen["threshold"], PostProcessing.from_dict(chosen["postprocessing"])
    chosen_scores, chosen_summary = score(probs, t, post)
    per_patient = {s.patient: s.dice for s in chosen_scores}
    if args.flair_only:
        return _select_companion(args, val, grid, chosen, probs, per_patient)
    baseline = load_model(args.baseline)
    flair = score(probabilities(model, data, val, flair_only=True, flip_tta=args.flip_tta), t, post)[1]
    base_probs = probabilities(baseline, data, val, flair_only=False)
    base = score(base_probs, 0.5, NONE)[1]
    base_flair = score(probabilities(baseline, data, val, flair_only=True), 0.5, NONE)[1]
    ships = chosen["val_dice_mean"] >= base["dice_mean"] and flair["dice_mean"] >= base_flair["dice_mean"]
    result = {
        "model": args.model, "baseline": args.baseline, "flip_tta": args.flip_tta, "val_patients": val, "grid": grid,
        "chosen": {"threshold": t, "postprocessing": post.to_dict(), "text": post.describe()},
        "val": {"all_sequences": chosen["val_dice_mean"], "flair_only": flair["dice_mean"],
                "no_postprocessing": score(probs, 0.5, NONE)[1]["dice_mean"]},
        "val_patients_dice": per_patient,
        "val_summary": chosen_summary,
        "val_leave_one_out": leave_one_out(grid),
        "baseline_val": {"all_sequences": base["dice_mean"], "flair_only": base_flair["dice_mean"]},
        "ships": bool(ships),
    }
    write_json(out / "selection.json", result)
    print(json.dumps({k: result[k] for k in ("chosen", "val", "baseline_val", "ships")}, indent=1))
    return 0


def _select_companion(args, val: list[str], grid: list, chosen: dict, probs: dict,
                      per_patient: dict[str, float]) -> int:
    main = json.loads(Path(args.main_selection).read_text())
    need = main["val"]["flair_only"] + FLAIR_MARGIN
    result = {
        "model": args.model, "inputs": "FLAIR alone", "main_selection": args.main_selection,
        "val_patients": val, "grid": grid,
        "chosen": {k: chosen[k] for k in ("threshold", "postprocessing", "text")},
        "val": {"flair_only": chosen["val_dice_mean"],
                "no_postprocessing": score(probs, 0.5, NONE)[1]["dice_mean"]},
        "val_patients_dice": per_patient,
        "val_leave_one_out": leave_one_out(grid),
        "baseline_val": {"flair_only": main["val"]["flair_only"], "model": main["model"]},
        "rule": f"FLAIR-only mean per-patient Dice >= main model's {main['val']['flair_only']:.4f} + {FLAIR_MARGIN}",
        "ships": bool(chosen["val_dice_mean"] >= need),
    }
    write_json(Path(args.out) / "selection.json", result)
    print(json.dumps({k: result[k] for k in ("chosen", "val", "baseline_val", "rule", "ships")}, indent=1))
    return 0


def cmd_test(args) -> int:
    split = json.loads(Path(args.split).read_text())
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundled = load_model()
    # None: each patient with the settings of the network that segmented it (model.json)
    runs = [("bundled", bundled, None, None), ("baseline", load_model(args.baseline), 0.5, NONE)]
    summary = {}
    for tag, model, t, post in runs:
        for flair_only in (False, True):
            start = time.perf_counter()
            probs = probabilities(model, data, split["test"], flair_only, routed=tag == "bundled")
            seconds = time.perf_counter() - start
            scores, s = score(probs, t, post)
            key = f"{tag}{'_flair_only' if flair_only else ''}"
            nets = {pid: model_label(net) for pid, (_, _, net) in probs.items()}
            shown = model_defaults(next(iter(probs.values()))[2]) if t is None else (t, post)
            rep = report(model_name(model), *shown, scores, s, flair_only)
            rep["networks"] = nets
            rep["seconds"] = seconds
            write_json(out / f"test_{key}.json", rep)
            summary[key] = s
            print(f"{key} ({model_name(model)}, {describe_settings(*shown)}): per-patient Dice mean "
                  f"{s['dice_mean']:.3f} median {s['dice_median']:.3f} min {s['dice_min']:.3f}; "
                  f"{s['n_slices']} slices in {seconds:.1f} s", flush=True)
            if tag == "baseline" and not flair_only:
                # 1.1 with the post-processing it was chosen with (min size 1000)
                s2 = score(probs, 0.5, PostProcessing("min_size", 1000))[1]
                summary["baseline_min_size_1000"] = s2
    write_json(out / "test_summary.json", summary)
    print("per-patient Dice (bundled):", np.round([p["dice"] for p in json.loads(
        (out / "test_bundled.json").read_text())["patients"]], 3).tolist())
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("command", choices=["select", "test"])
    ap.add_argument("--data", default="../shared/data/lgg/kaggle_3m")
    ap.add_argument("--model", nargs="+", default=["runs/bundled2/phase5.keras"],
                    help="candidate (select); several: the mean of their probabilities")
    ap.add_argument("--baseline", default="runs/bundled2/phase4.keras", help="the previous release (1.1)")
    ap.add_argument("--split", default="runs/bundled2/split-2.0.json")
    ap.add_argument("--out", default="runs/bundled2/eval")
    ap.add_argument("--flair-only", action="store_true",
                    help="select: the candidate is a FLAIR-only companion, scored with FLAIR alone")
    ap.add_argument("--flip-tta", action="store_true",
                    help="select: average with the prediction of the mirrored slices")
    ap.add_argument("--main-selection", default="runs/bundled2/eval/selection.json",
                    help="select --flair-only: the main model's selection.json (its FLAIR-only figure)")
    args = ap.parse_args()
    return cmd_select(args) if args.command == "select" else cmd_test(args)


if __name__ == "__main__":
    sys.exit(main())
