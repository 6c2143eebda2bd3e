"""The `saseg` command line: thin wrappers over the library API."""

from __future__ import annotations

import logging
from typing import Optional

import typer
from typing_extensions import Annotated

from . import __version__
from .errors import SasegError

app = typer.Typer(
    name="saseg",
    help="Surprise Adequacy for semantic segmentation: find the frames worth labelling.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"saseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
):
    """Score frames by surprise, evaluate against labels, and plan what to label."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def run() -> None:
    """Entry point that turns saseg errors into one line and exit code 1."""
    try:
        app(standalone_mode=False)
    except SasegError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1)


# Shared option types, defined once.
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Checkpoint dir (model.pt + model.json).")]
DataOpt = Annotated[str, typer.Option("--data", "-d", help="Dataset spec, e.g. camvid:PATH, folder:IMAGES[:LABELS], video:FILE, synthetic:n=200.")]
SplitOpt = Annotated[Optional[str], typer.Option("--split", help="Split for layouts that have them (train/val/test).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Torch device: cpu, cuda, cuda:1, mps.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice (recorded in the outputs).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Frames per forward pass.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
OnErrorOpt = Annotated[str, typer.Option("--on-error", help="Bad frames: 'raise' stops, 'skip' records and continues.")]


@app.command()
def train(
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="Checkpoint dir to write (resumed if it holds an unfinished run).")],
    arch: Annotated[str, typer.Option(help="small | efficientnet_lite0")] = "small",
    val: Annotated[Optional[str], typer.Option("--val", help="Validation spec (default: the val split of --data when it has one).")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    batch_size: BatchOpt = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    crop: Annotated[Optional[str], typer.Option(help="Random crop WxH, e.g. 256x192 (default: full frame).")] = None,
    scale: Annotated[str, typer.Option(help="Random scale range for augmentation, MIN,MAX.")] = "0.75,1.25",
    jitter: Annotated[float, typer.Option("--jitter", help="Colour jitter: random brightness, contrast, saturation factors in [1-J, 1+J]; 0 is off.")] = 0.0,
    image_size: Annotated[Optional[str], typer.Option("--image-size", help="Resize frames once to WxH before training, e.g. 320x240.")] = None,
    class_weights: Annotated[Optional[str], typer.Option("--class-weights", help="median_freq (median-frequency class balancing) or sqrt_median_freq (its square root: milder).")] = None,
    val_every: Annotated[int, typer.Option("--val-every", help="Validate every N epochs (and after the last).")] = 1,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue an unfinished run in --out.")] = True,
    quiet: QuietOpt = False,
):
    """Train a segmentation model with the paper's head (feature layer `head.features`)."""
    from .data import open_dataset
    from .data.specs import has_splits as _has_splits
    from .models.train import train as train_model

    train_data = open_dataset(data, split="train" if _has_splits(data) else None)
    val_data = open_dataset(val) if val else (open_dataset(data, split="val") if _has_splits(data) else None)
    summary = train_model(train_data, out, arch=arch, val_data=val_data, epochs=epochs,
                          batch_size=batch_size, lr=lr, crop_size=_size(crop), seed=seed,
                          scale_range=tuple(float(v) for v in scale.split(",")), color_jitter=jitter,
                          image_size=_size(image_size), class_weights=class_weights,
                          val_every=val_every, device=device, resume=resume, progress=not quiet)
    typer.echo(f"checkpoint: {out}  ({summary})")


@app.command()
def fit(
    model: ModelOpt,
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="SA model dir to write.")],
    split: SplitOpt = "train",
    estimator: Annotated[list[str], typer.Option("--estimator", "-e", help="mdsa (default), lsa, dsa; repeat for several.")] = ["mdsa"],
    pixels_per_class: Annotated[int, typer.Option(help="Pixels sampled per class per image; 0 = every pixel.")] = 100,
    max_images: Annotated[int, typer.Option(help="Images sampled from the training data; 0 = all.")] = 10_000,
    max_ats: Annotated[int, typer.Option("--max-ats-per-class", help="ATs kept per class; 0 = stream every sampled AT into MDSA.")] = 10_000,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = "cpu",
    on_error: OnErrorOpt = "raise",
    quiet: QuietOpt = False,
):
    """Fit per-class SA models (MDSA, LSA, DSA) on training pixels (paper 5.1)."""
    from .pipeline import fit as fit_sa

    meta = fit_sa(model, data, out, split=split, estimators=estimator,
                  pixels_per_class=pixels_per_class or None, max_images=max_images or None,
                  max_ats_per_class=max_ats or None, seed=seed, batch_size=batch_size,
                  device=device, progress=not quiet, on_error=on_error)
    typer.echo(f"SA model: {out}  estimators={','.join(meta['estimators'])}  "
               f"classes={len(meta['fitted_per_class'])}  frames={meta['data']['n_used']}")


@app.command()
def score(
    model: ModelOpt,
    sa: Annotated[str, typer.Option("--sa", help="SA model dir written by `saseg fit`.")],
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="scores.parquet to write; run files go beside it.")],
    split: SplitOpt = "test",
    pixels_per_class: Annotated[int, typer.Option(help="Pixels sampled per predicted class per frame; 0 = every pixel.")] = 1000,
    reference: Annotated[Optional[str], typer.Option(help="zscore.json of an earlier run, so group SAs stay comparable across runs.")] = None,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = "cpu",
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue an interrupted run.")] = True,
    predictions: Annotated[bool, typer.Option("--predictions/--no-predictions", help="Save predicted masks (needed by evaluate, export, video).")] = True,
    on_error: OnErrorOpt = "raise",
    quiet: QuietOpt = False,
):
    """Score frames: class SA per predicted class, z-scored group SA and frame SA."""
    from .pipeline import score as score_frames

    df = score_frames(model, sa, data, out, split=split, pixels_per_class=pixels_per_class or None,
                      reference=reference, seed=seed, batch_size=batch_size, device=device,
                      resume=resume, save_predictions=predictions, progress=not quiet,
                      on_error=on_error)
    typer.echo(f"scores: {out}  ({df['frame_id'].nunique()} frames, {len(df)} frame-class rows)")


@app.command()
def evaluate(
    scores: Annotated[str, typer.Option("--scores", "-s", help="scores.parquet from `saseg score`.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Eval dir to write.")],
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Labelled dataset spec (default: the one scored).")] = None,
    split: SplitOpt = "test",
    risk: Annotated[float, typer.Option(help="Acceptable share of skipped frames below IoU 0.5, for the max-skip table.")] = 0.05,
    quiet: QuietOpt = False,
):
    """RQ1 (Spearman SA vs IoU, Table 3) and RQ2 (skip trade-off, Figure 9) against labels."""
    from .evaluation import evaluate as run_eval

    summary = run_eval(scores, data, out, split=split, risk=risk, progress=not quiet)
    typer.echo(summary["table"])
    typer.echo(f"eval: {out}  ({summary['n_frames']} frames)")


@app.command()
def plan(
    scores: Annotated[str, typer.Option("--scores", "-s", help="scores.parquet from `saseg score`.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Dir for plan.csv and plan.json.")],
    score_column: Annotated[str, typer.Option("--score", help="Frame-level column to rank by (frames.parquet), e.g. frame_mdsa, frame_entropy, group_lanes_mdsa.")] = "frame_mdsa",
    skip_ratio: Annotated[Optional[float], typer.Option(help="Skip this share (0-1) of the least surprising frames.")] = None,
    budget: Annotated[Optional[int], typer.Option(help="Label this many frames, most surprising first.")] = None,
    max_risk: Annotated[Optional[float], typer.Option(help="Skip as much as keeps the pilot's share of skipped frames below IoU 0.5 under this (needs --eval).")] = None,
    eval_dir: Annotated[Optional[str], typer.Option("--eval", help="Eval dir of a labelled pilot run (for --max-risk and expected inaccuracy).")] = None,
    annotators: Annotated[int, typer.Option(help="Annotators per frame (price model).")] = 3,
):
    """The labelling queue: most surprising first, what to skip, and the money saved."""
    from .analysis.plan import plan_from_run

    result = plan_from_run(scores, out, score=score_column, skip_ratio=skip_ratio, budget=budget,
                           max_risk=max_risk, eval_dir=eval_dir, annotators=annotators)
    typer.echo(result.describe())
    typer.echo(f"plan: {out}/plan.csv")


@app.command()
def export(
    plan_path: Annotated[str, typer.Option("--plan", "-p", help="plan.csv from `saseg plan` (inside or beside the scored run).")],
    to: Annotated[str, typer.Option("--to", help="labelstudio | cvat | fiftyone")],
    out: Annotated[str, typer.Option("--out", "-o", help="Export dir to write.")],
    run: Annotated[Optional[str], typer.Option("--run", help="Scored run dir (default: found beside/above the plan).")] = None,
    copy: Annotated[bool, typer.Option("--copy", help="Copy frames into the export instead of referencing them.")] = False,
    include_skipped: Annotated[bool, typer.Option("--include-skipped", help="Export skipped frames too (after the queue).")] = False,
    image_root: Annotated[Optional[str], typer.Option(help="Label Studio: LOCAL_FILES_DOCUMENT_ROOT the image paths are relative to.")] = None,
    heatmaps: Annotated[bool, typer.Option("--heatmaps/--no-heatmaps", help="FiftyOne: add per-pixel SA heatmaps (runs the model).")] = True,
    device: DeviceOpt = "cpu",
):
    """Hand the labelling queue to Label Studio, CVAT or FiftyOne, with predictions as pre-annotations."""
    from .export.run import export_plan

    options = {"image_root": image_root} if image_root and to == "labelstudio" else {}
    path = export_plan(plan_path, to=to, out_dir=out, run_dir=run, heatmaps=heatmaps, device=device,
                       copy=copy, include_skipped=include_skipped, **options)
    typer.echo(f"{to} export: {path}  (import steps in {path}/IMPORT.md or import_fiftyone.py)")


@app.command()
def video(
    model: ModelOpt,
    sa: Annotated[str, typer.Option("--sa", help="SA model dir written by `saseg fit`.")],
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="MP4 file to write.")] = "review.mp4",
    split: SplitOpt = "test",
    fps: Annotated[float, typer.Option(help="Frames per second of the video.")] = 10,
    start: Annotated[int, typer.Option(help="First frame index.")] = 0,
    max_frames: Annotated[Optional[int], typer.Option(help="At most this many frames.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="SA above which pixels are highlighted (default: top of the colour scale).")] = None,
    device: DeviceOpt = "cpu",
    quiet: QuietOpt = False,
):
    """Render consecutive frames as review frames (input, label, prediction, SA heatmap) into an MP4."""
    from .review import write_review_video

    path = write_review_video(model, sa, data, out, split=split, fps=fps, start=start,
                              max_frames=max_frames, threshold=threshold, device=device,
                              progress=not quiet)
    typer.echo(f"video: {path}")


@app.command()
def report(
    run_dir: Annotated[str, typer.Argument(help="Run dir holding scores.parquet (and eval/, plan/).")],
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Report dir (default RUN/report).")] = None,
    gallery: Annotated[int, typer.Option(help="Most/least surprising frames to render for the gallery (0 = keep existing).")] = 6,
    experiment: Annotated[Optional[str], typer.Option(help="Output dir of `saseg experiment retrain`, for the RQ3 section.")] = None,
    device: DeviceOpt = "cpu",
):
    """Write a self-contained static HTML report of a run (opens from disk, no network)."""
    from .report import write_report
    from .review import write_gallery

    if gallery:
        write_gallery(run_dir, n=gallery, device=device)
    path = write_report(run_dir, out, experiment=experiment)
    typer.echo(f"report: {path}/index.html" if not str(path).endswith(".html") else f"report: {path}")


@app.command()
def select(
    scores: Annotated[str, typer.Option("--scores", "-s", help="scores.parquet of the unlabelled pool.")],
    target_class: Annotated[str, typer.Option("--target-class", "-t", help="Class name or id to improve, e.g. Car.")],
    out: Annotated[str, typer.Option("--out", "-o", help="CSV of the chosen frames.")] = "subset.csv",
    level: Annotated[str, typer.Option(help="high | low | random | diverse (surprising and spread out).")] = "high",
    size: Annotated[str, typer.Option(help="Frames to pick: an integer, or a fraction (0-1) of --base-size.")] = "0.1",
    base_size: Annotated[Optional[int], typer.Option(help="Size of the base training set, for fractional --size.")] = None,
    min_pixels: Annotated[int, typer.Option(help="Only frames with more than this many target-class pixels.")] = 1000,
    score_column: Annotated[str, typer.Option("--score", help="Score column to rank by.")] = "mdsa",
    top_fraction: Annotated[float, typer.Option(help="Share of eligible frames counted as high (or low) SA.")] = 0.3,
    seed: SeedOpt = 0,
):
    """Frames to add to the training data (paper RQ3): high/low/random SA, or diverse."""
    from .analysis.selection import select_from_scores

    chosen, spread = select_from_scores(
        scores, out, target_class=target_class, level=level,
        size=float(size) if "." in size else int(size), base_size=base_size, min_pixels=min_pixels,
        seed=seed, score=score_column, top_fraction=top_fraction)
    typer.echo(f"{len(chosen)} frames -> {out}  (spread of their ATs: mean pairwise "
               f"{spread['mean_pairwise']:.3g}, min {spread['min_pairwise']:.3g})")


experiment_app = typer.Typer(help="The paper's experiments.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("retrain")
def experiment_retrain(
    config: Annotated[str, typer.Option("--config", "-c", help="Experiment JSON (see configs/).")],
    quick: Annotated[bool, typer.Option(help="Use the config's quick block (tiny, for smoke runs).")] = False,
    quiet: QuietOpt = False,
):
    """RQ3: retrain with high/low/random/diverse frames added, over seeds; resumable."""
    from .experiment import run_retrain_experiment, summarise

    typer.echo(summarise(run_retrain_experiment(config, quick=quick, progress=not quiet)).to_string(index=False))


@app.command()
def demo(
    out: Annotated[str, typer.Option("--out", "-o", help="Run dir for every output.")] = "runs/demo",
    quick: Annotated[bool, typer.Option(help="Smaller data and fewer epochs (for tests).")] = False,
    quiet: QuietOpt = False,
):
    """The embedded default end to end: generate drives, train, fit, score, evaluate, plan."""
    from .demo import run_demo

    typer.echo(run_demo(out, quick=quick, progress=not quiet))


def _size(text: Optional[str]):
    if not text:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SasegError(f"Expected a size like 256x192 (WxH), but got {text!r}.") from None
    return (h, w)

