"""`saseg demo`: the embedded default end to end, on generated road scenes, in a few minutes.

A plain-daytime training drive mix and a shifted test mix (shadows, traffic, night, dusk,
rain) come from the procedural generator, so the demo needs no download and shows SA doing
its job: the shifted frames are the surprising ones, and they are where the model fails.

Then the triage a team would run: a labelled pilot of the test mix trains the quality model
(`saseg quality fit`) and calibrates guaranteed thresholds on it (out-of-fold risk, so the
calibration never sees in-sample predictions): whole frames (`plan_frame/`), and per segment
(`plan/`, exported and reported), with the label-error promise (at most 5 % of a frame's
segment labels wrong, 90 % confidence). The test pool is planned with them, and so is a
further pool of night drives, where the shift alarm should fire.

Last, the labelling loop closes: simulated labellers submit the generator's ground truth for
the labelled queue as Label Studio's JSON export, `saseg labels import` brings it back, and the
imported labels are evaluated (`evaluate --labelled-only`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from .commands.audit import estimate_audit, sample_audit
from .analysis.bounds import min_units
from .commands.plan import plan_from_run
from .commands.segment_plan import plan_segments_from_run
from .commands.quality import apply_quality, fit_quality
from .data import open_dataset
from .evaluation import evaluate
from .export import EXPORTERS
from .export.labels_import import import_labels, label_spec
from .export.labels_ls import simulated_json_export
from .export.run import export_plan
from .models.train import train
from .pipeline import fit, score
from .report import write_report
from .review import write_gallery, write_review_video
from .columns import RISK, frame_column, frame_target_iou
from .io import write_json
from .layout import EvalDir, PlanDir, RunDir

log = logging.getLogger(__name__)

FULL = dict(size="160x120", n_train=400, n_val=40, n_test=200, n_pilot=160, n_night=60, epochs=20,
            max_ats=1500, ppc=250, video_frames=60, gallery=6, n_audit=30)
QUICK = dict(size="96x72", n_train=48, n_val=8, n_test=32, n_pilot=32, n_night=16, epochs=1,
             max_ats=300, ppc=50, video_frames=8, gallery=2, n_audit=8)
ALPHA, CONFIDENCE, IOU_BELOW = 0.05, 0.9, 0.5


def run_demo(out: str | Path = "runs/demo", *, quick: bool = False, progress: bool = True,
             seed: int = 0) -> str:
    """Run every step into `out` and return a printable summary of results and outputs."""
    cfg = QUICK if quick else FULL
    out = Path(out)
    run = RunDir(out)
    started = time.perf_counter()
    steps: list[tuple[str, float]] = []

    def lap(name):
        steps.append((name, time.perf_counter() - started))

    spec = "synthetic:n={n},seed={s},size={size},split={split}"
    train_spec = spec.format(n=cfg["n_train"], s=seed + 1, size=cfg["size"], split="train")
    val_spec = spec.format(n=cfg["n_val"], s=seed + 2, size=cfg["size"], split="val")
    test_spec = spec.format(n=cfg["n_test"], s=seed + 3, size=cfg["size"], split="test")
    model_dir = out / "model"
    summary = train(open_dataset(train_spec), model_dir, arch="small",
                    val_data=open_dataset(val_spec), epochs=cfg["epochs"], batch_size=8,
                    lr=3e-3, seed=seed, progress=progress)
    lap("train")
    fit(model_dir, train_spec, out / "sa", estimators=("mdsa", "lsa"),
        max_ats_per_class=cfg["max_ats"], seed=seed, progress=progress)
    lap("fit")
    score(model_dir, out / "sa", test_spec, run.scores_path,
          pixels_per_class=cfg["ppc"], seed=seed, progress=progress)
    lap("score")
    # the labelled pilot: same mix as the pool, other drives; it trains the quality model
    pilot_spec = spec.format(n=cfg["n_pilot"], s=seed + 4, size=cfg["size"], split="test")
    pilot = RunDir(out / "pilot")
    score(model_dir, out / "sa", pilot_spec, pilot.scores_path, pixels_per_class=cfg["ppc"], seed=seed,
          progress=progress)
    evaluate(pilot.scores_path, pilot_spec, pilot.eval_dir, plots=False, progress=progress)
    quality = fit_quality(pilot.root, pilot.eval_dir, out / "quality", seed=seed)
    apply_quality(pilot, out / "quality")  # out-of-fold on the pilot itself
    lap("pilot+quality")
    apply_quality(run, out / "quality")
    result = evaluate(run.scores_path, test_spec, run.eval_dir, progress=progress)
    lap("evaluate")
    guaranteed = dict(max_risk=ALPHA, calibration=pilot.eval_dir, confidence=CONFIDENCE,
                      threshold=IOU_BELOW, score=frame_column(RISK))
    the_plan = plan_from_run(run.scores_path, out / "plan_frame", **guaranteed)
    realised = _realised(the_plan, EvalDir(run.eval_dir).iou())
    # the plan a team would use: per segment, label-error promise, calibrated on the same pilot
    per_segment = dict(calibration=pilot.eval_dir, alpha=ALPHA, confidence=CONFIDENCE, iou_below=IOU_BELOW,
                       score="risk")
    segment = plan_segments_from_run(run.scores_path, run.plan_dir, eval_dir=run.eval_dir, **per_segment)
    night_spec = spec.format(n=cfg["n_night"], s=seed + 5, size=cfg["size"], split="test") + ",conditions=night"
    night = RunDir(out / "night")
    score(model_dir, out / "sa", night_spec, night.scores_path, pixels_per_class=cfg["ppc"], seed=seed,
          progress=progress, quality=quality)
    night_plan = plan_segments_from_run(night.scores_path, night.plan_dir, **per_segment)
    lap("plan")
    # the audit: the pool's mIoU from a few labelled frames (the generator's labels stand in
    # for the labellers'), beside the true value from all of them
    sample_audit(run, cfg["n_audit"], out / "audit", seed=seed)
    audit = estimate_audit(run, out / "audit", test_spec, out / "audit" / "estimate")
    lap("audit")
    for tool in EXPORTERS:
        export_plan(PlanDir(run.plan_dir).queue_path, to=tool, out_dir=out / "export" / tool)
    lap("export")
    loop = _labels_back(out, run, test_spec, progress=progress)
    lap("labels back")
    write_review_video(model_dir, out / "sa", test_spec, out / "review.mp4",
                       max_frames=cfg["video_frames"], progress=progress)
    write_gallery(run, n=cfg["gallery"])
    report = write_report(out)
    lap("video+report")

    frames = run.frames()
    by_condition = _by_condition(open_dataset(test_spec), frames,
                                 EvalDir(run.eval_dir).iou())
    lines = [
        "saseg demo: generated plain-daytime training drives, shifted test drives",
        f"  model: small CNN, validation mIoU {_last(summary, 'val_miou')}",
        f"  test frames scored: {len(frames)}; test mIoU {result['dataset_miou']:.3f}",
        "",
        "Surprise by driving condition (train drives: day and a little dusk):",
        by_condition,
        "",
        "RQ1 - Spearman rho between class SA and IoU (negative = surprise predicts failure):",
        result["table"],
        "",
        "Quality model, fitted on the labelled pilot (out-of-fold, grouped by drive):",
        quality.describe(),
        "",
        "Max skip at 5 % of skipped frames below IoU 0.5, read off the test pool's own labels "
        "(hindsight, for comparison):",
        _max_skip_line(EvalDir(run.eval_dir)),
        "",
        f"Whole frames, guaranteed (calibrated on the {cfg['n_pilot']}-frame pilot):",
        the_plan.describe(),
        realised,
        "",
        f"Per segment, guaranteed (the plan exported and reported; calibrated on the same {cfg['n_pilot']}-frame "
        "pilot):",
        _pilot_size_line(cfg["n_pilot"]),
        segment.describe(),
        "",
        f"The same segment promise on a further pool of {cfg['n_night']} night frames:",
        night_plan.describe(),
        "",
        f"Audit from {cfg['n_audit']} labelled frames (PPI++; saseg audit):",
        f"  {audit.summary['sentence']}; true pool mIoU {result['dataset_miou']:.2f} (all "
        f"{len(run.frames())} frames labelled); labels alone: "
        f"{audit.summary['miou']['labels_only']['low']:.2f}-{audit.summary['miou']['labels_only']['high']:.2f}.",
        "",
        "Labels back: the labelled queue as Label Studio exports it, imported and evaluated:",
        loop,
        "",
        "timings: " + ", ".join(f"{n} {t:.0f}s" for n, t in steps),
        "outputs:",
        f"  model checkpoint   {model_dir}",
        f"  SA models          {out / 'sa'}",
        f"  scores             {run.scores_path} and {run.frames_path}",
        f"  evaluation         {run.eval_dir} (correlation.csv, tradeoff.csv, *.png)",
        f"  pilot + quality    {pilot.root}, {out / 'quality'}",
        f"  labelling plan     {PlanDir(run.plan_dir).queue_path} and {PlanDir.SEGMENTS} (night pool: "
        f"{night.plan_dir}; whole-frame plan: {out / 'plan_frame'})",
        f"  labelling exports  {out / 'export'} (labelstudio, cvat, fiftyone; see IMPORT.md)",
        f"  audit              {out / 'audit'} (sample, plan.csv; estimate/audit.json, classes.csv)",
        f"  labels back        {out / 'labelled'} (imported labels; evaluated in {out / 'labelled' / 'eval'})",
        f"  review video       {out / 'review.mp4'}",
        f"  HTML report        {report}",
    ]
    return "\n".join(lines)


def _labels_back(out: Path, run: RunDir, test_spec: str, *, progress: bool) -> str:
    """Simulated labellers: the generator's ground truth for the exported queue, written as
    Label Studio's JSON export, then the real import path and `evaluate --labelled-only`."""
    truth = {frame.frame_id: frame.label for frame in open_dataset(test_spec)}
    export_dir, labelled = out / "export" / "labelstudio", out / "labelled"
    tool_export = out / "labelstudio_export.json"
    write_json(tool_export, simulated_json_export(export_dir, truth.__getitem__))
    report = import_labels("labelstudio", export_dir, tool_export, labelled)
    result = evaluate(run.scores_path, label_spec(labelled), labelled / "eval", plots=False,
                      progress=progress, labelled_only=True)
    refit = fit_quality(run.root, labelled / "eval", labelled / "quality")
    return (f"  {report.describe()}\n"
            f"  evaluated on the imported labels: {result['n_frames']} frames, mean class IoU "
            f"{result['mean_iou']:.3f}, dataset mIoU {result['dataset_miou']:.3f}\n"
            f"  quality model refitted on them ({labelled / 'quality'}; the queue's hard frames "
            f"only, see README):\n" + "\n".join("    " + line for line in refit.describe().splitlines()))


def _realised(the_plan, iou) -> str:
    """What the demo can check because its pool is labelled: the realised share of failures."""
    skipped = the_plan.queue.loc[the_plan.queue["action"] == "skip", "frame_id"]
    if skipped.empty:
        return "Realised on the labelled pool: nothing skipped."
    frame_iou = frame_target_iou(iou)
    below = float((frame_iou.reindex(skipped) < IOU_BELOW).mean())
    return (f"Realised on the labelled pool: {below:.1%} of the {len(skipped)} skipped frames have mean "
            f"class IoU below {IOU_BELOW:g} (bound: {ALPHA:.0%}).")


def _pilot_size_line(n_pilot: int) -> str:
    """How large a pilot the segment promise needs, and why."""
    floor = min_units(ALPHA, 1 - CONFIDENCE, "wsr")
    why = (f"wrong segments among the lowest-scored slow it down, so the demo labels {n_pilot}"
           if n_pilot >= 2 * floor else f"{n_pilot} is too few: --quick only checks that every step runs")
    return (f"  Pilot size: {n_pilot} frames. The betting bound certifies nothing under {floor} pilot frames "
            f"even if no accepted segment were wrong (its capital must grow from 1 to 1/DELTA = "
            f"{1 / (1 - CONFIDENCE):.0f} by at most 1 + ALPHA per frame); {why}.")


def _max_skip_line(eval_dir: EvalDir) -> str:
    table = pd.read_csv(eval_dir.max_skip_path) if eval_dir.max_skip_path.exists() else None
    if table is None:
        return "  (no max_skip.csv)"
    rows = table[table["target"] == "frame"]
    return "  " + ", ".join(f"{r.score} {r.max_skip_ratio:.0%}" for r in rows.itertuples())


def _last(summary, key):
    value = getattr(summary, key, None)
    return f"{value:.3f}" if isinstance(value, float) else "n/a"


def _by_condition(dataset, frames, iou) -> str:
    """Mean frame SA and mean class IoU per generator condition: are shifted frames surprising?"""
    condition = {dataset.frame_id(i): dataset.condition(i) for i in range(len(dataset))}
    frame_iou = frame_target_iou(iou)
    table = frames.assign(condition=frames["frame_id"].map(condition),
                          mean_class_iou=frames["frame_id"].map(frame_iou))
    summary = table.groupby("condition").agg(frames=("frame_id", "size"),
                                             frame_mdsa=("frame_mdsa", "mean"),
                                             mean_class_iou=("mean_class_iou", "mean"))
    return summary.sort_values("frame_mdsa").to_string(float_format=lambda v: f"{v:.2f}")
