"""The `saseg` command line: thin wrappers over the library API.

How a run ends:

* usage errors (a missing or unknown option, a malformed value, a bad choice) print Click's
  usage message and exit 2;
* saseg's own errors (`saseg.errors.SasegError`) and the failures the outside world causes
  (disk full, permission denied, a corrupt Parquet, safetensors or JSON file) print one line
  ``error: ...`` and exit 1; Ctrl-C prints ``error: interrupted`` and exits 130;
* anything else is a bug: one line ``error: internal error: ...`` and exit 1.

``saseg --debug COMMAND`` re-raises instead, so the full traceback shows.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

import torch
import typer
from typing_extensions import Annotated

from . import __version__, evaluation, experiment, pipeline, review
from . import demo as demo_module
from . import report as report_module
from .analysis import audit as analysis_audit
from .analysis import quality as quality_run
from .commands import audit as audit_command
from .commands import plan as plan_command
from .commands import quality as quality_command
from .commands import segment_plan as segment_plan_command
from .commands import selection as selection_command
from .data import has_splits, open_dataset
from .distributed import RayOptions
from .errors import SasegError
from .estimators import ESTIMATORS, SCORES
from .export import EXPORTERS, exporter
from .export import labels_import as labels_import_module
from .io import output_lock
from .export import run as export_run
from .layout import PlanDir
from .models.checkpoint import TRUSTED_FACTORIES_ENV
from .models.train import train as train_model
from .quality import REGRESSORS

try:  # recent typer vendors Click; its usage errors derive from typer.TyperException
    from typer import TyperException as ClickException
except ImportError:  # older typer raises Click's own
    from click import ClickException

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, what shells report for Ctrl-C

LARGEST_INT = 2**53  # beyond it an integer option is a typo, and numpy's int64 overflows


def checked_numbers(command):
    """Wrap a command so every number option is checked at the edge before it runs.

    Click's ranges let ``nan`` through (every comparison with NaN is false) and ints of any
    size: ``--lr nan`` trained a NaN model, ``--annotators 99999999999999999999`` overflowed
    deep inside. A non-finite float or an int beyond `LARGEST_INT` is a usage error naming
    the option (exit 2).
    """
    @functools.wraps(command)
    def checked(*args, **kwargs):
        for name, value in kwargs.items():
            hint = "--" + name.replace("_", "-")
            if isinstance(value, float) and not math.isfinite(value):
                raise typer.BadParameter(f"expected a finite number, got {value}.", param_hint=hint)
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST_INT:
                raise typer.BadParameter(f"expected at most {LARGEST_INT}, got {value}.", param_hint=hint)
        return command(*args, **kwargs)
    return checked


class CheckedTyper(typer.Typer):
    """A `typer.Typer` whose commands get `checked_numbers`."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(command):
            register(checked_numbers(command))
            return command
        return decorator


app = CheckedTyper(
    name="saseg",
    help="Surprise Adequacy for semantic segmentation: find the frames worth labelling.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@dataclass
class Session:
    """What the app callback learns from the global options, for `run` to read afterwards."""

    debug: bool = False
    context: Optional[typer.Context] = None  # the app's context: its resources end with the command


session = Session()


def _version(value: bool):
    if value:
        typer.echo(f"saseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="On an error, show the full traceback instead of one line.")] = False,
    trust_factory: Annotated[Optional[list[str]], typer.Option(
        "--trust-factory", metavar="MODULE:FUNCTION",
        help="Allow a checkpoint's model.json to import and run this factory (code from the "
             "checkpoint's author); repeat for several. Also read from $SASEG_TRUSTED_FACTORIES.")] = None,
):
    """Score frames by surprise, evaluate against labels, and plan what to label."""
    session.debug = debug
    session.context = ctx
    if trust_factory:  # through the environment, so worker processes inherit the consent
        known = [f for f in os.environ.get(TRUSTED_FACTORIES_ENV, "").split(",") if f]
        os.environ[TRUSTED_FACTORIES_ENV] = ",".join(dict.fromkeys(known + list(trust_factory)))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def run(args: Optional[Sequence[str]] = None) -> None:
    """Console entry point: run the app on `args` (default ``sys.argv[1:]``) and exit.

    Usage errors exit 2 with Click's usage message; the errors `error_message` knows exit 1
    with one line ``error: ...`` on stderr; Ctrl-C exits 130. With ``--debug`` the error is
    re-raised, so Python prints its traceback.
    """
    session.debug = False
    try:
        code = app(args=None if args is None else list(args), prog_name="saseg", standalone_mode=False)
    except ClickException as exc:  # usage errors: Click's own "Usage: ... Error: ..." block
        exc.show()
        raise SystemExit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):  # typer raises Abort for Ctrl-D at a prompt
        code = INTERRUPTED_EXIT_CODE
    except Exception as exc:
        if session.debug:
            raise
        typer.echo(f"error: {error_message(exc)}", err=True)
        raise SystemExit(1)
    # Without standalone mode typer returns exit codes instead of exiting, and turns Ctrl-C
    # into exit code 130.
    if code == INTERRUPTED_EXIT_CODE:
        typer.echo("error: interrupted", err=True)
    if isinstance(code, int) and code:
        raise SystemExit(code)


def error_message(exc: BaseException) -> str:
    """The one line (without ``error: ``) that `run` prints for an exception.

    saseg's errors print their message; OS errors their reason and file (``No space left on
    device: /path``); Parquet/Arrow, safetensors and JSON errors their type and message;
    anything else is reported as an internal error.
    """
    if isinstance(exc, SasegError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
        text = exc.strerror + (f": {' -> '.join(paths)}" if paths else "")
    elif isinstance(exc, OSError):
        text = str(exc) or type(exc).__name__
    elif isinstance(exc, json.JSONDecodeError):
        text = f"invalid JSON: {exc}"
    elif isinstance(exc, _file_format_errors()):
        text = f"{type(exc).__name__}: {exc}"
    else:
        text = f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"
    return " ".join(text.split())  # one line, whatever the message holds


def _file_format_errors() -> tuple[type[BaseException], ...]:
    """pyarrow's and safetensors' error types, if loaded (an error of theirs needs them loaded)."""
    types = []
    pyarrow_lib = sys.modules.get("pyarrow.lib")
    if pyarrow_lib is not None:
        types.append(pyarrow_lib.ArrowException)
    safetensors = sys.modules.get("safetensors")
    if safetensors is not None and hasattr(safetensors, "SafetensorError"):
        types.append(safetensors.SafetensorError)
    return tuple(types)


def hold_output(path: str | os.PathLike) -> None:
    """Lock the folder a command writes (a ``.parquet`` path: its folder) until it returns.

    One writer per output: a second saseg process writing there is refused with one line
    naming the holder (`saseg.io.output_lock`); the lock dies with its process.
    """
    folder = Path(path).parent if Path(path).suffix in (".parquet", ".html") else Path(path)
    if session.context is not None:  # None only when a command function is called directly
        session.context.with_resource(output_lock(folder))


# Values that need more than a type: parsed once, rejected as usage errors naming the option.
def parse_device(text: str) -> str:
    """A torch device string (``cpu``, ``cuda``, ``cuda:1``, ``mps``); checked, not opened."""
    try:
        torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise typer.BadParameter(f"expected a torch device such as cpu, cuda, cuda:1 or mps, got {text!r}.") from None
    return text


def parse_scale_range(text: str) -> tuple[float, float]:
    """``MIN,MAX`` (``0.75,1.25``) as floats with ``0 < MIN <= MAX``."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected MIN,MAX like 0.75,1.25, got {text!r}") from None
    if not (math.isfinite(high) and 0 < low <= high):
        raise typer.BadParameter(f"expected 0 < MIN <= MAX, got {text!r}")
    return low, high


def parse_image_size(text: str) -> tuple[int, int]:
    """``WxH`` (``256x192``) as ``(H, W)``, both positive."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected WxH like 256x192, got {text!r}") from None
    if width < 1 or height < 1:
        raise typer.BadParameter(f"expected a positive width and height, got {text!r}")
    return height, width


def parse_count_or_fraction(text: str) -> float:
    """An integer count >= 1 (``40``), or else a fraction in (0, 1) (``0.1``)."""
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise typer.BadParameter(f"expected an integer or a fraction like 0.1, got {text!r}") from None
        if not 0 < value < 1:
            raise typer.BadParameter(f"expected a fraction in (0, 1), got {text!r}")
        return value
    if value < 1:
        raise typer.BadParameter(f"expected a count of at least 1, got {text!r}")
    return value


def registered(registry: dict, what: str):
    """An option callback that accepts only names in `registry` (one name, or each of a repeated
    option's), read when the option is parsed, so a tool, score or regressor registered after
    import (`saseg.export.register_exporter`, `saseg.estimators.register_score`,
    `saseg.quality.register_regressor`) is accepted without editing the CLI."""
    def check(value):
        for name in [value] if isinstance(value, str) else value or []:
            if name not in registry:
                raise typer.BadParameter(f"expected {what} in {list(registry)}, got {name!r}")
        return value
    return check


# Shared option types, defined once.
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Checkpoint dir (model.pt + model.json).")]
DataOpt = Annotated[str, typer.Option("--data", "-d", help="Dataset spec, e.g. camvid:PATH, folder:IMAGES[:LABELS], video:FILE, synthetic:n=200.")]
SplitOpt = Annotated[Optional[str], typer.Option("--split", help="Split for layouts that have them (train/val/test).")]
DeviceOpt = Annotated[str, typer.Option("--device", callback=lambda v: parse_device(v), help="Torch device: cpu, cuda, cuda:1, mps.")]
AllowMismatchOpt = Annotated[bool, typer.Option("--allow-mismatch", help="Use an SA model fitted on another model, layer or class list (a logged warning instead of an error).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for every random choice (recorded in the outputs).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Frames per forward pass.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
EngineOpt = Annotated[Literal["local", "ray"], typer.Option("--engine", help="local: this process; ray: a Ray cluster (pip install 'saseg[ray]'), the same rows.")]
AddressOpt = Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join (host:6379, ray://host:10001 or auto); default: start a local Ray.")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Ray actors, each with its own copy of the model.")]
GpusOpt = Annotated[float, typer.Option("--gpus-per-worker", min=0.0, help="GPUs per Ray actor (then it runs on cuda).")]
CpusOpt = Annotated[float, typer.Option("--cpus-per-worker", min=0.0, help="CPUs per Ray actor (its torch threads).")]
OnErrorOpt = Annotated[Literal["raise", "skip"], typer.Option("--on-error", help="Bad frames: 'raise' stops, 'skip' records and continues.")]


@app.command()
def train(
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="Checkpoint dir to write (resumed if it holds an unfinished run).")],
    arch: Annotated[str, typer.Option(help="small | efficientnet_lite0")] = "small",
    val: Annotated[Optional[str], typer.Option("--val", help="Validation spec (default: the val split of --data when it has one).")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 10,
    batch_size: BatchOpt = 8,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    # A bare `tuple`: typer reads `tuple[int, int]` as an option taking two arguments.
    crop: Annotated[Optional[tuple], typer.Option(parser=parse_image_size, metavar="WxH", help="Random crop WxH, e.g. 256x192 (default: full frame).")] = None,
    scale: Annotated[tuple, typer.Option(parser=parse_scale_range, metavar="MIN,MAX", help="Random scale range for augmentation, MIN,MAX.")] = "0.75,1.25",
    jitter: Annotated[float, typer.Option("--jitter", min=0.0, help="Colour jitter: random brightness, contrast, saturation factors in [1-J, 1+J]; 0 is off.")] = 0.0,
    image_size: Annotated[Optional[tuple], typer.Option("--image-size", parser=parse_image_size, metavar="WxH", help="Resize frames once to WxH before training, e.g. 320x240.")] = None,
    class_weights: Annotated[Optional[Literal["median_freq", "sqrt_median_freq"]], typer.Option("--class-weights", help="median_freq (median-frequency class balancing) or sqrt_median_freq (its square root: milder).")] = None,
    val_every: Annotated[int, typer.Option("--val-every", min=1, help="Validate every N epochs (and after the last).")] = 1,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue an unfinished run in --out.")] = True,
    quiet: QuietOpt = False,
):
    """Train a segmentation model with the paper's head (feature layer `head.features`)."""
    hold_output(out)
    splits = has_splits(data)
    train_data = open_dataset(data, split="train" if splits else None)
    val_data = open_dataset(val) if val else (open_dataset(data, split="val") if splits else None)
    summary = train_model(train_data, out, arch=arch, val_data=val_data, epochs=epochs,
                          batch_size=batch_size, lr=lr, crop_size=crop, seed=seed,
                          scale_range=scale, color_jitter=jitter, image_size=image_size,
                          class_weights=class_weights,
                          val_every=val_every, device=device, resume=resume, progress=not quiet)
    typer.echo(f"checkpoint: {out}  ({summary})")


def _ray_options(engine: str, address, workers, gpus_per_worker, cpus_per_worker):
    """The Ray options of `fit`/`score`; they only mean something with --engine ray."""
    if engine != "ray":
        return None
    return RayOptions(address=address, workers=workers, gpus_per_worker=gpus_per_worker,
                      cpus_per_worker=cpus_per_worker)


@app.command()
def fit(
    model: ModelOpt,
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="SA model dir to write.")],
    split: SplitOpt = "train",
    estimator: Annotated[list[str], typer.Option("--estimator", "-e", callback=registered(ESTIMATORS, "an SA estimator"), help=f"{', '.join(ESTIMATORS)} (default mdsa); repeat for several.")] = ["mdsa"],
    pixels_per_class: Annotated[int, typer.Option(min=0, help="Pixels sampled per class per image; 0 = every pixel.")] = 100,
    max_images: Annotated[int, typer.Option(min=0, help="Images sampled from the training data; 0 = all.")] = 10_000,
    max_ats: Annotated[int, typer.Option("--max-ats-per-class", min=0, help="ATs kept per class; 0 = stream every sampled AT into MDSA.")] = 10_000,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = "cpu",
    on_error: OnErrorOpt = "raise",
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    workers: WorkersOpt = 1,
    gpus_per_worker: GpusOpt = 0.0,
    cpus_per_worker: CpusOpt = 1.0,
    quiet: QuietOpt = False,
):
    """Fit per-class SA models (MDSA, LSA, DSA) on training pixels (paper 5.1)."""
    hold_output(out)
    meta = pipeline.fit(model, data, out, split=split, estimators=estimator,
                  pixels_per_class=pixels_per_class or None, max_images=max_images or None,
                  max_ats_per_class=max_ats or None, seed=seed, batch_size=batch_size,
                  device=device, progress=not quiet, on_error=on_error, engine=engine,
                  ray_options=_ray_options(engine, address, workers, gpus_per_worker, cpus_per_worker))
    typer.echo(f"SA model: {out}  estimators={','.join(meta['estimators'])}  "
               f"classes={len(meta['fitted_per_class'])}  frames={meta['data']['n_used']}")


@app.command()
def score(
    model: ModelOpt,
    sa: Annotated[str, typer.Option("--sa", help="SA model dir written by `saseg fit`.")],
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="scores.parquet to write; run files go beside it.")],
    split: SplitOpt = "test",
    pixels_per_class: Annotated[int, typer.Option(min=0, help="Pixels sampled per predicted class per frame; 0 = every pixel.")] = 1000,
    reference: Annotated[Optional[str], typer.Option(help="zscore.json of an earlier run, so group SAs stay comparable across runs.")] = None,
    seed: SeedOpt = 0,
    batch_size: BatchOpt = 8,
    device: DeviceOpt = "cpu",
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue an interrupted run.")] = True,
    predictions: Annotated[bool, typer.Option("--predictions/--no-predictions", help="Save predicted masks (needed by evaluate, export, video).")] = True,
    on_error: OnErrorOpt = "raise",
    allow_mismatch: AllowMismatchOpt = False,
    features: Annotated[bool, typer.Option("--features/--no-features", help="Also compute the quality features (softmax dispersion over interiors and boundaries, geometry, false-negative mass, plug-in IoU) that `saseg quality` learns from.")] = True,
    quality: Annotated[Optional[str], typer.Option("--quality", help="Quality dir from `saseg quality fit`: add `quality` (predicted IoU) and `risk` (1 - quality) scores.")] = None,
    tta: Annotated[Optional[Literal["flip"]], typer.Option("--tta", help="Test-time augmentation feature: 'flip' adds flip_iou (agreement with the mirrored frame's prediction); a second forward pass per frame, about doubling the scoring time.")] = None,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    workers: WorkersOpt = 1,
    gpus_per_worker: GpusOpt = 0.0,
    cpus_per_worker: CpusOpt = 1.0,
    quiet: QuietOpt = False,
):
    """Score frames: class SA per predicted class, z-scored group SA and frame SA."""
    hold_output(Path(out).parent)  # --out names the scores table, whatever its suffix
    loaded_quality = quality_run.RunQuality.load(quality) if quality else None  # checked before any work
    df = pipeline.score(model, sa, data, out, split=split, pixels_per_class=pixels_per_class or None,
                      reference=reference, seed=seed, batch_size=batch_size, device=device,
                      resume=resume, save_predictions=predictions, progress=not quiet,
                      on_error=on_error, allow_mismatch=allow_mismatch, features=features,
                      quality=loaded_quality, engine=engine, tta=tta,
                      ray_options=_ray_options(engine, address, workers, gpus_per_worker, cpus_per_worker))
    typer.echo(f"scores: {out}  ({df['frame_id'].nunique()} frames, {len(df)} frame-class rows)")


@app.command()
def evaluate(
    scores: Annotated[str, typer.Option("--scores", "-s", help="scores.parquet from `saseg score`.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Eval dir to write.")],
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Labelled dataset spec (default: the one scored).")] = None,
    split: SplitOpt = "test",
    risk: Annotated[float, typer.Option(min=0.0, max=1.0, help="Acceptable share of skipped frames below IoU 0.5, for the max-skip table.")] = 0.05,
    labelled_only: Annotated[bool, typer.Option("--labelled-only", help="Evaluate only the scored frames the labels cover (e.g. a labelled queue from `saseg labels import`).")] = False,
    quiet: QuietOpt = False,
):
    """RQ1 (Spearman SA vs IoU, Table 3) and RQ2 (skip trade-off, Figure 9) against labels."""
    hold_output(out)
    summary = evaluation.evaluate(scores, data, out, split=split, risk=risk, progress=not quiet,
                                  labelled_only=labelled_only)
    typer.echo(summary["table"])
    typer.echo(f"eval: {out}  ({summary['n_frames']} frames)")


@app.command()
def plan(
    scores: Annotated[str, typer.Option("--scores", "-s", help="scores.parquet from `saseg score`.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Dir for plan.csv and plan.json.")],
    score_column: Annotated[Optional[str], typer.Option("--score", help="Frame-level column to rank by (frames.parquet), e.g. frame_risk, frame_mdsa, frame_entropy, group_lanes_mdsa. Default: frame_risk when the run has a quality model, else frame_mdsa.")] = None,
    skip_ratio: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Skip this share (0-1) of the least surprising frames.")] = None,
    budget: Annotated[Optional[int], typer.Option(min=0, help="Label this many frames, most surprising first.")] = None,
    max_risk: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="ALPHA: skip with a guarantee that at most this share of skipped frames is below --iou-below (Learn-then-Test; needs --calibration).")] = None,
    calibration: Annotated[Optional[str], typer.Option("--calibration", help="Eval dir of a labelled pilot run scored like the pool, to calibrate --max-risk on.")] = None,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="1 - DELTA: the confidence of the --max-risk guarantee.")] = 0.9,
    iou_below: Annotated[float, typer.Option(min=0.0, max=1.0, help="A frame fails when its IoU is below this.")] = 0.5,
    targets: Annotated[Optional[list[str]], typer.Option("--target", help="What must stay accurate: 'frame' (mean class IoU), a class or a group; repeat for several (all must pass).")] = None,
    ratio_risk: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="No guarantee: skip the largest share of frames whose skipped pilot frames were at most this share below IoU 0.5 (needs --eval).")] = None,
    eval_dir: Annotated[Optional[str], typer.Option("--eval", help="Eval dir of a labelled pilot run (for --ratio-risk and the expected inaccuracy).")] = None,
    annotators: Annotated[int, typer.Option(min=1, help="Annotators per frame (price model).")] = 3,
    unit: Annotated[str, typer.Option(help="'frame': skip whole frames; 'segment': accept or label each (frame, class) segment (needs --max-risk and --calibration).")] = "frame",
    promise: Annotated[str, typer.Option(help="Segment unit: 'label-error' (at most ALPHA of a frame's segment labels wrong, on average) or 'skip-precision' (at most ALPHA of the accepted segments wrong).")] = "label-error",
    in_expectation: Annotated[bool, typer.Option("--in-expectation", help="Segment unit: the label-error promise in expectation (conformal risk control) instead of with confidence 1 - DELTA.")] = False,
    bound: Annotated[str, typer.Option(help="Segment unit: 'wsr' (betting) or 'hb' (Hoeffding-Bentkus) confidence bound.")] = "wsr",
    per_class: Annotated[Optional[list[str]], typer.Option("--per-class", help="Segment unit: a class with its own promise (repeat for several).")] = None,
    review: Annotated[float, typer.Option(min=0.0, help="Segment unit: units charged per accepted segment for reviewing it (0 = free).")] = 0.0,
):
    """The labelling queue: most surprising first, what to skip, and the money saved."""
    hold_output(out)
    if unit == "segment":
        if max_risk is None or calibration is None:
            raise typer.BadParameter("--unit segment needs --max-risk and --calibration (a labelled pilot).")
        seg = segment_plan_command.plan_segments_from_run(
            scores, out, calibration=calibration, alpha=max_risk, confidence=confidence, score=score_column,
            iou_below=iou_below, promise=promise, in_expectation=in_expectation, bound=bound,
            per_class=per_class or (), annotators=annotators, review=review)
        typer.echo(seg.describe())
        typer.echo(f"plan: {PlanDir(out).queue_path} (per segment: {PlanDir(out).segments_path})")
        return
    if unit != "frame":
        raise typer.BadParameter(f"expected --unit frame or segment, got {unit!r}.")
    result = plan_command.plan_from_run(scores, out, score=score_column, skip_ratio=skip_ratio, budget=budget,
                           ratio_risk=ratio_risk, eval_dir=eval_dir, max_risk=max_risk,
                           calibration=calibration, confidence=confidence, targets=targets or ["frame"],
                           threshold=iou_below, annotators=annotators)
    typer.echo(result.describe())
    typer.echo(f"plan: {PlanDir(out).queue_path}")


@app.command()
def export(
    existing: Annotated[Optional[str], typer.Argument(metavar="[DIR]", help="With --check: an existing export folder to check as it is (not rewritten).")] = None,
    plan_path: Annotated[Optional[str], typer.Option("--plan", "-p", help="plan.csv from `saseg plan` (inside or beside the scored run).")] = None,
    to: Annotated[Optional[str], typer.Option("--to", callback=registered(EXPORTERS, "a labelling tool"), help=f"Labelling tool: {', '.join(EXPORTERS)} (with DIR: found from its files).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Export dir to write.")] = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Scored run dir (default: found beside/above the plan).")] = None,
    copy: Annotated[bool, typer.Option("--copy", help="Copy frames into the export instead of referencing them.")] = False,
    include_skipped: Annotated[bool, typer.Option("--include-skipped", help="Export skipped frames too (after the queue).")] = False,
    image_root: Annotated[Optional[str], typer.Option(help="Label Studio: its LOCAL_FILES_DOCUMENT_ROOT (default: the export dir, or the folder above the images when they are referenced elsewhere).")] = None,
    heatmaps: Annotated[bool, typer.Option("--heatmaps/--no-heatmaps", help="FiftyOne: add per-pixel SA heatmaps (runs the model).")] = True,
    device: DeviceOpt = "cpu",
    check: Annotated[bool, typer.Option("--check", help="Re-read the export as the tool will (images, masks, order) and exit 1 if anything differs. `--check DIR` checks an existing export without rewriting it (masks compared with the run's when --plan is given).")] = False,
):
    """Hand the labelling queue to Label Studio, CVAT or FiftyOne, with predictions as pre-annotations."""
    if existing is not None:
        if not check:
            raise typer.BadParameter("a DIR argument needs --check (export writes to --out)")
        result = export_run.check_existing_export(existing, to=to, plan=plan_path, run_dir=run,
                                                  include_skipped=include_skipped)
        typer.echo(result.describe())
        if not result.ok:
            raise typer.Exit(1)
        return
    if plan_path is None or to is None or out is None:
        raise typer.BadParameter("expected --plan, --to and --out (or --check DIR)")
    hold_output(out)
    options = {"image_root": image_root} if image_root and "image_root" in exporter(to).options else {}
    path = export_run.export_plan(plan_path, to=to, out_dir=out, run_dir=run, heatmaps=heatmaps, device=device,
                       copy=copy, include_skipped=include_skipped, **options)
    typer.echo(f"{to} export: {path}  (import steps in {path}/IMPORT.md)")
    if check:
        result = export_run.check_plan_export(plan_path, to=to, out_dir=out, run_dir=run,
                                              include_skipped=include_skipped)
        typer.echo(result.describe())
        if not result.ok:
            raise typer.Exit(1)


@app.command()
def video(
    model: ModelOpt,
    sa: Annotated[str, typer.Option("--sa", help="SA model dir written by `saseg fit`.")],
    data: DataOpt,
    out: Annotated[str, typer.Option("--out", "-o", help="MP4 file to write.")] = "review.mp4",
    split: SplitOpt = "test",
    fps: Annotated[float, typer.Option(help="Frames per second of the video.")] = 10,
    start: Annotated[int, typer.Option(min=0, help="First frame index.")] = 0,
    max_frames: Annotated[Optional[int], typer.Option(min=1, help="At most this many frames.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="SA above which pixels are highlighted (default: top of the colour scale).")] = None,
    score: Annotated[str, typer.Option("--score", callback=registered(SCORES, "a per-pixel score"), help=f"Per-pixel score of the heatmap: {', '.join(SCORES)}.")] = "mdsa",
    device: DeviceOpt = "cpu",
    allow_mismatch: AllowMismatchOpt = False,
    quiet: QuietOpt = False,
):
    """Render consecutive frames as review frames (input, label, prediction, SA heatmap) into an MP4."""
    path = review.write_review_video(model, sa, data, out, split=split, fps=fps, start=start,
                              max_frames=max_frames, threshold=threshold, score=score, device=device,
                              progress=not quiet, allow_mismatch=allow_mismatch)
    typer.echo(f"video: {path}")


@app.command()
def report(
    run_dir: Annotated[str, typer.Argument(help="Run dir holding scores.parquet (and eval/, plan/).")],
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Report dir (default RUN/report).")] = None,
    gallery: Annotated[int, typer.Option(min=0, help="Most/least surprising frames to render for the gallery (0 = keep existing).")] = 6,
    experiment: Annotated[Optional[str], typer.Option(help="Output dir of `saseg experiment retrain`, for the RQ3 section.")] = None,
    device: DeviceOpt = "cpu",
):
    """Write a self-contained static HTML report of a run (opens from disk, no network)."""
    hold_output(out or Path(run_dir) / "report")
    if gallery:
        review.write_gallery(run_dir, n=gallery, device=device)
    path = report_module.write_report(run_dir, out, experiment=experiment)
    typer.echo(f"report: {path}/index.html" if not str(path).endswith(".html") else f"report: {path}")


@app.command()
def select(
    scores: Annotated[str, typer.Option("--scores", "-s", help="scores.parquet of the unlabelled pool.")],
    target_class: Annotated[str, typer.Option("--target-class", "-t", help="Class name or id to improve, e.g. Car.")],
    out: Annotated[str, typer.Option("--out", "-o", help="CSV of the chosen frames.")] = "subset.csv",
    level: Annotated[Literal["high", "low", "random", "diverse"], typer.Option(help="high, low or random SA; diverse = surprising and spread out.")] = "high",
    size: Annotated[float, typer.Option(parser=parse_count_or_fraction, help="Frames to pick: an integer, or a fraction (0-1) of --base-size.")] = "0.1",
    base_size: Annotated[Optional[int], typer.Option(min=1, help="Size of the base training set, for fractional --size.")] = None,
    min_pixels: Annotated[int, typer.Option(min=0, help="Only frames with more than this many target-class pixels.")] = 1000,
    score_column: Annotated[str, typer.Option("--score", help="Score column to rank by.")] = "mdsa",
    top_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of eligible frames counted as high (or low) SA.")] = 0.3,
    seed: SeedOpt = 0,
):
    """Frames to add to the training data (paper RQ3): high/low/random SA, or diverse."""
    chosen, spread = selection_command.select_from_scores(
        scores, out, target_class=target_class, level=level,
        size=size, base_size=base_size, min_pixels=min_pixels,
        seed=seed, score=score_column, top_fraction=top_fraction)
    typer.echo(f"{len(chosen)} frames -> {out}  (spread of their ATs: mean pairwise "
               f"{spread['mean_pairwise']:.3g}, min {spread['min_pairwise']:.3g})")


quality_app = CheckedTyper(help="A learned frame-quality score: fit on a labelled pilot, apply to runs.",
                          no_args_is_help=True)
app.add_typer(quality_app, name="quality")


@quality_app.command("fit")
def quality_fit(
    run_dir: Annotated[str, typer.Option("--run", help="Scored pilot run dir (scored with features).")],
    eval_dir: Annotated[str, typer.Option("--eval", help="Its eval dir (`saseg evaluate`): the IoU to learn.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Quality dir to write.")],
    regressor: Annotated[Optional[str], typer.Option("--regressor", callback=registered(REGRESSORS, "a quality regressor"), help=f"Regressor: {', '.join(REGRESSORS)} (default: lightgbm, or ridge below --min-rows-for-trees pilot rows).")] = None,
    min_rows_for_trees: Annotated[int, typer.Option(min=10, help="Without --regressor: below this many pilot rows, a ridge regression replaces the trees.")] = 200,
    seed: SeedOpt = 0,
    extra_features: Annotated[Optional[list[str]], typer.Option("--extra-features", help="Also learn from an optional feature group: components, flip (needs `score --tta flip`), temporal; repeat for several. Off by default: none has shown an out-of-drive gain yet.")] = None,
):
    """Learn each class's, group's and frame's IoU from label-free features (LightGBM or --regressor; grouped CV by drive)."""
    hold_output(out)
    named = {"regressor": regressor} if regressor else {}  # a default fit writes what it always wrote
    fitted = quality_command.fit_quality(run_dir, eval_dir, out, min_rows_for_trees=min_rows_for_trees, seed=seed,
                                     extra_features=extra_features or (), **named)
    typer.echo(fitted.describe())
    typer.echo(f"quality model: {out}")


@quality_app.command("apply")
def quality_apply(
    run_dir: Annotated[str, typer.Option("--run", help="Scored run dir (scored with features).")],
    quality: Annotated[str, typer.Option("--quality", "-q", help="Quality dir from `saseg quality fit`.")],
):
    """Add `quality` (predicted IoU) and `risk` (1 - quality) to a run: rank and plan by frame_risk."""
    hold_output(run_dir)
    df = quality_command.apply_quality(run_dir, quality)
    typer.echo(f"quality: {run_dir}  ({len(df)} rows; scores risk, group_<g>_risk, frame_risk)")


labels_app = CheckedTyper(help="Labels back from a labelling tool, as a dataset saseg opens.",
                         no_args_is_help=True)
app.add_typer(labels_app, name="labels")


@labels_app.command("import")
def labels_import(
    tool: Annotated[Literal["labelstudio", "cvat", "fiftyone"], typer.Option("--tool", help="The tool the labels come from.")],
    export_dir: Annotated[str, typer.Option("--export", "-e", help="The folder `saseg export` wrote (moved or copied is fine).")],
    source: Annotated[str, typer.Option("--from", "-f", help="The tool's export: Label Studio JSON, or its PNG zip/folder; CVAT 'Segmentation mask 1.1' zip; FiftyOne: a FiftyOneDataset export folder.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Label folder to write (or add to): images/, labels/, classes.json.")],
    root: Annotated[Optional[str], typer.Option("--root", help="Label Studio: the folder the task image paths are relative to, if not the export's document root.")] = None,
    tasks: Annotated[Optional[str], typer.Option("--tasks", help="Label Studio PNG: a JSON export of the project, to map task ids to frames (default: labelstudio_tasks.json in the export).")] = None,
    pick: Annotated[Literal["refuse", "latest"], typer.Option("--pick", help="Two annotations for one task: refuse the task, or take the latest (highest annotation id).")] = "refuse",
    field: Annotated[str, typer.Option("--field", help="FiftyOne: the segmentation field with the labels.")] = "ground_truth",
):
    """Read the tool's export, match tasks to frame ids, write labels `--data folder:...` opens."""
    hold_output(out)
    report = labels_import_module.import_labels(tool, export_dir, source, out, root=root, tasks=tasks,
                                                pick=pick, field=field)
    typer.echo(report.describe())
    typer.echo(f"labels: {out}  (--data '{labels_import_module.label_spec(out)}')")
    if not report.ok:
        typer.echo(f"error: {len(report.refused)} tasks refused (listed above); the "
                   f"{len(report.imported)} others are imported", err=True)
        raise typer.Exit(1)


experiment_app = CheckedTyper(help="The paper's experiments.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("retrain")
def experiment_retrain(
    config: Annotated[str, typer.Option("--config", "-c", help="Experiment JSON (see configs/).")],
    quick: Annotated[bool, typer.Option(help="Use the config's quick block (tiny, for smoke runs).")] = False,
    quiet: QuietOpt = False,
):
    """RQ3: retrain with high/low/random/diverse frames added, over seeds; resumable."""
    typer.echo(experiment.summarise(experiment.run_retrain_experiment(config, quick=quick, progress=not quiet)).to_string(index=False))


@app.command()
def demo(
    out: Annotated[str, typer.Option("--out", "-o", help="Run dir for every output.")] = "runs/demo",
    quick: Annotated[bool, typer.Option(help="Smaller data and fewer epochs (for tests).")] = False,
    quiet: QuietOpt = False,
):
    """The embedded default end to end: generate drives, train, fit, score, evaluate, plan."""
    hold_output(out)
    typer.echo(demo_module.run_demo(out, quick=quick, progress=not quiet))


audit_app = CheckedTyper(help="The pool's IoU from a few labelled frames, with a confidence interval (PPI++).",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("sample")
def audit_sample(
    run_dir: Annotated[str, typer.Option("--run", help="Scored run dir (the pool; scored with features).")],
    n: Annotated[int, typer.Option("-n", min=1, help="Frames to label.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Audit dir to write (sample.csv, plan.csv).")],
    seed: SeedOpt = 0,
    uniform_share: Annotated[float, typer.Option("--uniform-share", min=0.0, max=1.0, help="Share of uniform sampling mixed into the uncertainty-driven inclusion probabilities (0.5: no frame's weight above 2x uniform).")] = 0.5,
    predictor: Annotated[Literal["plugin", "quality"], typer.Option("--predictor", help="plugin: the softmax plug-in IoU; quality: the learned `quality` (after `saseg quality apply`).")] = "plugin",
):
    """Draw the frames to label for an audit: uncertain frames more often, each with its probability."""
    hold_output(out)
    table = audit_command.sample_audit(run_dir, n, out, seed=seed,
                                        uniform_share=uniform_share, predictor=predictor)
    typer.echo(f"audit sample: {len(table)} frames to label in {out}/plan.csv "
               f"(inclusion probabilities {table['pi'].min():.3f}-{table['pi'].max():.3f}); "
               f"`saseg export --plan {out}/plan.csv --run {run_dir} --to ...` sends them to a labelling tool")


@audit_app.command("estimate")
def audit_estimate(
    run_dir: Annotated[str, typer.Option("--run", help="Scored run dir (the pool).")],
    sample: Annotated[str, typer.Option("--sample", help="Audit dir from `saseg audit sample`.")],
    labels: Annotated[str, typer.Option("--labels", help="Labels of the sampled frames: a folder:IMAGES:LABELS or camvid: spec whose frame ids match the sample's.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Dir for audit.json, classes.csv, widths.csv/png.")],
    level: Annotated[float, typer.Option("--level", min=0.5, max=0.999, help="Confidence level of the intervals.")] = 0.9,
    iou_below: Annotated[float, typer.Option("--iou-below", min=0.0, max=1.0, help="Frame-IoU threshold for the share of frames below it.")] = 0.5,
):
    """Per-class pool IoU, mIoU and the share of frames below --iou-below, each with an interval."""
    hold_output(out)
    result = audit_command.estimate_audit(run_dir, sample, labels, out, level=level,
                                           iou_below=iou_below)
    typer.echo(analysis_audit.describe(result))
