"""One string names a dataset: ``open_dataset("camvid:/data/camvid:test")``.

Grammar
-------
::

    SPEC    := KIND ":" BODY [ "?" OPTIONS ]
    OPTIONS := KEY "=" VALUE { "&" KEY "=" VALUE }

    camvid:PATH[:SPLIT]              SegNet layout: PATH/{split}/, PATH/{split}annot/
    cityscapes:PATH[:SPLIT]          leftImg8bit/{split}/{city}/, gtFine/{split}/{city}/
    folder:IMAGES[:LABELS]           any image tree; labels matched by relative path
    video:FILE                       a video file, decoded with ffmpeg (unlabelled)
    synthetic:KEY=VAL{,KEY=VAL}[:SPLIT]   generated scenes (options checked by the generator)

The kind is everything before the first ``:``; the body is split at the remaining ``:``
(except a Windows drive letter such as ``C:\\``), and options start at the first ``?``.
Paths that contain ``:`` or ``?`` therefore need a symlink (rare on Linux, and the price of a
string you can type on a command line). ``video:FILE`` is never split, so only ``?`` matters
there.

Options: ``folder`` takes ``image_suffix``, ``label_suffix``, ``classes`` (metadata JSON),
``names`` (comma-separated), ``ignore_index`` (int or ``none``), ``label_format``
(``index`` | ``colour``); ``video`` takes ``stride``, ``fps``, ``classes``, ``names``,
``ignore_index``. They may equally be passed as keyword arguments (the CLI does); where
both give a value the spec wins, as it does for the split. A keyword set to None counts as
not given (so CLI defaults pass through); write ``ignore_index="none"`` for no ignore index. ``Dataset.spec`` is the canonical
form (absolute paths, sorted options, split filled in) and reopens the same data.

Examples: ``camvid:../shared/data/camvid:val``, ``video:drive.mp4?stride=5``,
``folder:imgs:labels?image_suffix=_image.jpg&label_suffix=_label.png&classes=meta.json``.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable

from ..errors import DataError
from .base import Dataset
from .camvid import open_camvid
from .cityscapes import open_cityscapes
from .folder import open_folder
from .spec_format import format_spec
from .synthetic import open_synthetic
from .video import open_video

__all__ = ["KINDS", "format_spec", "has_splits", "open_dataset", "parse_spec", "split_body"]

logger = logging.getLogger(__name__)


def _path(value: Any) -> str:
    return os.path.abspath(os.path.expanduser(str(value)))


def _positive(kind: type) -> Callable[[Any], Any]:
    def convert(value: Any):
        try:
            number = kind(value)
        except (TypeError, ValueError):
            number = None
        if number is None or number <= 0:
            raise ValueError(f"a positive {kind.__name__}")
        return number

    return convert


def _ignore_index(value: Any) -> int | None:
    if value is None or str(value).lower() in ("none", "null", ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError("an integer or 'none'") from None


def _label_format(value: Any) -> str:
    value = {"color": "colour"}.get(str(value).lower(), str(value).lower())
    if value not in ("index", "colour"):
        raise ValueError("'index' or 'colour'")
    return value


_CLASS_OPTIONS = {"classes": _path, "names": str, "ignore_index": _ignore_index}

#: kind -> (body syntax, option converters); None means the reader checks its own options.
KINDS: dict[str, tuple[str, dict[str, Callable] | None]] = {
    "camvid": ("PATH[:SPLIT]", {}),
    "cityscapes": ("PATH[:SPLIT]", {}),
    "folder": ("IMAGES[:LABELS]", {"image_suffix": str, "label_suffix": str,
                                    "label_format": _label_format, **_CLASS_OPTIONS}),
    "video": ("FILE", {"stride": _positive(int), "fps": _positive(float), **_CLASS_OPTIONS}),
    "synthetic": ("KEY=VAL{,KEY=VAL}[:SPLIT]", None),
}


def split_body(body: str) -> list[str]:
    """Split at ``:`` but keep Windows drive letters (``C:\\x``) whole."""
    parts, start = [], 0
    for match in re.finditer(":", body):
        i = match.start()
        if i - start == 1 and body[start].isalpha() and body[i + 1:i + 2] in ("/", "\\"):
            continue
        parts.append(body[start:i])
        start = i + 1
    return parts + [body[start:]]


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split a spec into ``(kind, body, options)``; raise DataError naming the valid kinds."""
    kind, sep, rest = str(spec).partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:
        raise DataError(
            f"Expected a dataset spec KIND:..., KIND one of "
            f"{', '.join(f'{k}:{v[0]}' for k, v in KINDS.items())}; but got {spec!r}."
        )
    body, _, query = rest.partition("?")
    return kind, body, _parse_pairs(query, "&", spec)


def _parse_pairs(text: str, sep: str, spec: str) -> dict[str, str]:
    pairs = {}
    for item in filter(None, text.split(sep)):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise DataError(
                f"Expected options as key=value in the spec {spec!r}, but got {item!r}.")
        pairs[key.strip()] = value.strip()
    return pairs


def open_dataset(spec: str, *, split: str | None = None, on_error: str = "raise",
                 **options) -> Dataset:
    """Open the dataset a spec string names (grammar in the module docstring).

    Parameters
    ----------
    spec : str
        E.g. ``camvid:/data/camvid:test`` or ``video:drive.mp4?stride=5``.
    split : str, optional
        For layouts with splits, used when the spec names none.
    on_error : {"raise", "skip"}
        "skip" records unreadable frames in ``dataset.skipped`` instead of stopping.
    **options
        Reader options (None values are ignored, so CLI defaults pass through).

    Returns
    -------
    Dataset
        With ``.spec`` set to the canonical spec string.
    """
    kind, body, spec_options = parse_spec(spec)
    merged = {k: v for k, v in options.items() if v is not None}
    for key, value in spec_options.items():
        if key in merged and str(merged[key]) != value:
            logger.warning("Option %s=%s in the spec %r wins over %s=%s.",
                           key, value, spec, key, merged[key])
        merged[key] = value
    syntax, converters = KINDS[kind]
    if converters is not None:
        merged = _convert(kind, merged, converters)

    if kind in ("video", "folder") and split is not None:
        raise DataError(f"Expected no split for a {kind} dataset (spec {spec!r}), but got {split!r}.")
    if kind == "video":
        return open_video(body, on_error=on_error, **merged)
    parts = split_body(body)
    if len(parts) > 2 or not parts[0] and kind != "synthetic":
        raise DataError(f"Expected the spec form {kind}:{syntax}, but got {spec!r}.")
    second = parts[1] if len(parts) == 2 and parts[1] else None
    if kind == "folder":
        return open_folder(parts[0], second, on_error=on_error, **merged)
    if second is not None and split is not None and second != split:
        logger.warning("Split %r in the spec %r wins over split=%r.", second, spec, split)
    split = second or split
    if kind == "camvid":
        return open_camvid(parts[0], split=split, on_error=on_error)
    if kind == "cityscapes":
        return open_cityscapes(parts[0], split=split, on_error=on_error)
    return _open_synthetic(parts[0], merged, split, on_error, spec)


def _convert(kind: str, options: dict[str, Any], converters: dict[str, Callable]) -> dict:
    out = {}
    for key, value in options.items():
        if key not in converters:
            valid = ", ".join(sorted(converters)) or "none"
            raise DataError(f"Expected {kind} options from [{valid}], but got {key!r}.")
        try:
            out[key] = converters[key](value)
        except ValueError as exc:
            raise DataError(
                f"Expected {kind} option {key} to be {exc}, but got {value!r}.") from None
    return out


def _open_synthetic(body: str, options: dict[str, Any], split: str | None, on_error: str,
                    spec: str) -> Dataset:
    merged = {**{k: str(v) for k, v in options.items()}, **_parse_pairs(body, ",", spec)}
    return open_synthetic(merged, split=split, on_error=on_error)  # its .spec reparses


def has_splits(spec: str) -> bool:
    """Whether the spec's layout has named splits (so a command's default split applies)."""
    return parse_spec(spec)[0] in ("camvid", "cityscapes", "synthetic")
