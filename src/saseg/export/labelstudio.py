"""Label Studio export: one task per frame, in priority order, pre-annotated with brush masks.

Writes to ``out_dir``:

* ``tasks.json`` - a list of tasks in rank order. ``data`` holds ``image`` (URL), ``frame_id``,
  ``surprise`` and ``rank``, and every ``frame_<score>`` of the run (``frame_mdsa``,
  ``frame_entropy``, ``frame_risk``, ...), so the Data Manager can show and sort on them; ``predictions``
  holds one prediction (``model_version`` "saseg") with one ``brushlabels`` region per
  predicted class (Label Studio brush RLE, see `saseg.export.rle`). Its ``score`` is the
  model's confidence in the mask, ``1 - frame_risk`` (the learned quality), and absent
  without a quality model: never the queue priority, which ``data.rank`` holds.
* ``labelstudio_config.xml`` - the labelling interface: a header with the rank (and risk or
  surprise), an ``Image`` and ``BrushLabels`` with the class names and colours.
* ``labelstudio_storage.json`` - ``document_root`` and ``storage_path`` (below), relative to
  the export folder, so the folder can move.
* ``saseg_classes.json`` - the class metadata, for ``saseg labels import``.
* ``import_labelstudio.py`` - the API import in one command (standard library only); it
  records Label Studio's task ids in ``labelstudio_tasks.json`` (for the PNG export's names).
* ``IMPORT.md`` - the import steps, headless machine included.
* ``images/`` - frames decoded from a video or generated (PNG), and copies with ``copy=True``.

Images are served by Label Studio's local-files storage. Label Studio serves
``/data/local-files/?d=<path>`` as ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT/<path>``, and
only when a Local files storage of the project holds that file; it refuses a storage *equal*
to the document root. So ``image`` is ``?d=<path relative to image_root>``, and the storage
is the deepest folder holding every image (``out_dir/images`` for exported frames), strictly
below ``image_root`` (default: ``out_dir`` when the images are in it, else the parent of the
storage folder). With ``url_prefix`` the URL is ``<url_prefix>/<path relative to image_root>``
(images served over HTTP; no storage).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from ..data.classes import ClassInfo
from ..errors import DataError, FormatError
from ..io import read_json, write_json, write_text
from . import rle
from .labelstudio_notes import import_notes
from .queue import ACCEPTED_COLUMN, ImageFn, PredictionFn, iter_items, prune, select_rows, write_classes

logger = logging.getLogger(__name__)

FROM_NAME = "tag"
ACCEPTED_FIELD = "accepted_segments"  # task field: classes a segment plan accepted
TO_NAME = "image"
LOCAL_FILES_URL = "/data/local-files/?d="  # Label Studio serves DOCUMENT_ROOT/<path> here
TASK_MAP = "labelstudio_tasks.json"  # {"project": id, "tasks": {task id: frame id}}
CONFIDENCE = "frame_risk"  # prediction score = 1 - this frame score, when the run has it


def export_labelstudio(
    queue,
    *,
    out_dir: str | os.PathLike,
    classes: ClassInfo,
    prediction_for: PredictionFn,
    image_for: ImageFn | None = None,
    copy: bool = False,
    include_skipped: bool = False,
    image_root: str | os.PathLike | None = None,
    url_prefix: str | None = None,
) -> Path:
    """Write a Label Studio project import (tasks.json + labelling config) for the queue.

    Parameters
    ----------
    queue, out_dir, classes, prediction_for, image_for, copy, include_skipped
        The exporter contract (`saseg.export.registry`).
    image_root : path, optional
        Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``; image paths are made relative to it.
        Default: `out_dir` when every image is in it, else the folder above the deepest one
        holding every image (Label Studio refuses a storage equal to its document root).
    url_prefix : str, optional
        Serve images from ``<url_prefix>/<relative path>`` instead of local-files storage.

    Returns
    -------
    Path
        `out_dir`.
    """
    out_dir = Path(out_dir)
    rows = select_rows(queue, include_skipped=include_skipped)
    items, tasks = [], []
    marks = ACCEPTED_COLUMN in rows.columns  # a segment plan: show its accepted classes per task
    for item in iter_items(rows, out_dir=out_dir, classes=classes, prediction_for=prediction_for,
                           image_for=image_for, materialise="copy" if copy else "reference"):
        items.append(item.image)
        prediction = {"model_version": "saseg",
                      "result": brush_results(item.prediction, classes, region_prefix=f"r{item.rank}")}
        if CONFIDENCE in item.frame_scores:
            prediction["score"] = min(1.0, max(0.0, 1.0 - item.frame_scores[CONFIDENCE]))
        tasks.append({
            "data": {"image": None, "frame_id": item.frame_id, "surprise": item.score,
                     "rank": item.rank, **item.frame_scores,
                     **({ACCEPTED_FIELD: ", ".join(item.accepted) or "none"} if marks else {})},
            "predictions": [prediction],
        })
    root, storage = serving_paths(items, out_dir, image_root, local_files=not url_prefix)
    for task, image in zip(tasks, items):
        task["data"]["image"] = image_url(image, root, url_prefix)

    prune(out_dir / "images", set(items))
    # Compact: every RLE byte on its own indented line would multiply the file size.
    write_text(out_dir / "tasks.json", json.dumps(tasks, separators=(",", ":")) + "\n")
    write_text(out_dir / "labelstudio_config.xml",
               labelstudio_config(classes, header=header_fields([t["data"] for t in tasks]), accepted=marks))
    here = out_dir.resolve()
    write_json(out_dir / "labelstudio_storage.json",
               {"document_root": os.path.relpath(root, here),
                "storage_path": os.path.relpath(storage, here) if storage else None,
                "url_prefix": url_prefix, "tasks": len(tasks),
                "numeric_fields": numeric_fields([t["data"] for t in tasks])})
    write_classes(out_dir, classes)
    (out_dir / TASK_MAP).unlink(missing_ok=True)  # task ids of an earlier queue's import
    write_text(out_dir / "import_labelstudio.py", IMPORT_SCRIPT)
    write_text(out_dir / "IMPORT.md", import_notes(os.path.relpath(root, here),
                                                   os.path.relpath(storage, here) if storage else None,
                                                   url_prefix, len(tasks)))
    logger.info("Wrote %d Label Studio tasks to %s", len(tasks), out_dir / "tasks.json")
    return out_dir


def brush_results(
    prediction: np.ndarray, classes: ClassInfo, *, region_prefix: str = "r"
) -> list[dict]:
    """One ``brushlabels`` result per predicted class present (ignored pixels get none).

    Parameters
    ----------
    prediction : ndarray of shape (H, W), int
        Class ids; values outside ``0..num_classes-1`` (the ignore index) are left unpainted.
    """
    height, width = prediction.shape
    results = []
    for class_id in np.unique(prediction):
        if not 0 <= class_id < classes.num_classes:
            continue
        results.append({
            "id": f"{region_prefix}c{int(class_id)}",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "brushlabels",
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {
                "format": "rle",
                "rle": rle.encode(prediction == class_id),
                "brushlabels": [classes.names[class_id]],
            },
        })
    return results


def header_fields(data: list[dict]) -> list[str]:
    """Task fields the labelling page shows in its header: rank, then risk or surprise.

    Only fields every task holds (Label Studio refuses tasks that lack a field the config names).
    """
    wanted = ["rank", CONFIDENCE if any(CONFIDENCE in d for d in data) else "surprise"]
    return [f for f in wanted if data and all(f in d for d in data)]


def numeric_fields(data: list[dict]) -> list[str]:
    """Task fields that hold numbers (rank, surprise, frame scores): the Data Manager's view
    types them Number, so they sort and filter as numbers, not text."""
    keys = dict.fromkeys(k for d in data for k in d)
    return [k for k in keys if k not in ("image", "frame_id")
            and all(isinstance(d.get(k), (int, float)) or d.get(k) is None for d in data)]


def labelstudio_config(classes: ClassInfo, header: list[str] = (), *, accepted: bool = False) -> str:
    """The labelling interface XML: a header with the `header` task fields, an image with one
    brush label per class, in class colours; with `accepted`, a second header names the task's
    accepted segments (``$accepted_segments``: a segment plan's model masks not to redraw)."""
    labels = "\n".join(
        f"    <Label value={quoteattr(name)} background={quoteattr(_hex(colour))}/>"
        for name, colour in zip(classes.names, classes.colours)
    )
    shown = " · ".join(f"{field.replace('frame_', '')} ${field}" for field in header)
    return (
        "<View>\n"
        + (f"  <Header value={quoteattr(shown)}/>\n" if header else "")
        + (f'  <Header value="Accepted model segments, do not redraw: ${ACCEPTED_FIELD}"/>\n' if accepted else "")
        + f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n'
        f"{labels}\n"
        "  </BrushLabels>\n"
        "</View>\n"
    )


def image_url(image: Path, root: Path, url_prefix: str | None = None) -> str:
    """Label Studio URL of an image file below `root` (local-files storage, or `url_prefix`)."""
    try:
        relative = Path(image).resolve().relative_to(root).as_posix()
    except ValueError:
        raise DataError(
            f"Expected every image below the Label Studio image_root {root}, but got {image}."
        ) from None
    if url_prefix:
        return url_prefix.rstrip("/") + "/" + quote(relative)
    return LOCAL_FILES_URL + quote(relative)


def document_root(export_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """The folder an export's ``?d=`` image paths are relative to: `root` when given (the export
    moved away from images it references), else ``document_root`` of ``labelstudio_storage.json``
    resolved against the export folder (absolute in older exports)."""
    if root is not None:
        return Path(root).resolve()
    return (Path(export_dir) / storage_settings(export_dir)["document_root"]).resolve()


def storage_settings(export_dir: str | os.PathLike) -> dict:
    """An export's ``labelstudio_storage.json``, checked: ``document_root`` a path string and
    ``url_prefix`` a string or null."""
    path = Path(export_dir) / "labelstudio_storage.json"
    setup = read_json(path)
    if (not isinstance(setup, dict) or not isinstance(setup.get("document_root"), str)
            or not isinstance(setup.get("url_prefix") or "", str)):
        raise FormatError(f"{path}: expected the storage settings `saseg export` writes (document_root, "
                          "url_prefix), but got another layout.")
    return setup


def serving_paths(images: list[Path], out_dir: Path, image_root=None, *,
                  local_files: bool = True) -> tuple[Path, Path | None]:
    """Label Studio's document root and the Local files storage folder for these images.

    Returns
    -------
    root : Path
        `image_root`, or `out_dir` when the storage folder is below it, or the storage's parent.
    storage : Path or None
        The deepest folder holding every image (None without local-files serving).

    Raises
    ------
    DataError
        When the storage folder would not be strictly below the root (Label Studio refuses
        it), or the images share no folder but the file-system root.
    """
    out_dir = Path(out_dir).resolve()
    storage = Path(os.path.commonpath([str(p.parent) for p in images])) if images else out_dir / "images"
    if image_root is not None:
        root = Path(image_root).resolve()
    elif out_dir in storage.parents:
        root = out_dir
    else:
        root = storage.parent
    if not local_files:
        return root, None
    if storage == root or root not in storage.parents:
        raise DataError(
            f"Expected the images in a folder strictly below the Label Studio image_root {root} "
            f"(Label Studio refuses a storage equal to its document root), but they are all only "
            f"below {storage}; pass an image_root above it, or export with --copy."
        )
    return root, storage


def _hex(colour) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in colour)


IMPORT_SCRIPT = r'''"""Import this saseg queue into a running Label Studio (>= 1.20) through its API.

    python import_labelstudio.py --url http://localhost:8080 --token PERSONAL_ACCESS_TOKEN

Start Label Studio first with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<document_root of labelstudio_storage.json, relative
to this folder>. Creates a project from labelstudio_config.xml, adds the Local files storage
(not synced), imports tasks.json in queue order, adds a Data Manager tab sorted by rank and
writes labelstudio_tasks.json (task id -> frame id). Reads the files beside this script,
wherever the folder is. Needs only Python's standard library. Prints the project URL;
exits 1 with one line on failure, after deleting the project it created.
"""
import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CHUNK = 500  # tasks per import request: large queues stay under Django's upload limit


class ImportFailed(Exception):
    pass


def origin(url):
    """(scheme, host, port) of a URL: the token goes to the origin the user named, only."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        port = None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only within the origin of --url: urllib would otherwise send the
    Authorization header to whatever host and port a 30x names."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if origin(newurl) != origin(req.full_url):
            raise ImportFailed(f"{req.get_method()} {req.full_url} was redirected to another origin "
                               f"({newurl}); refusing to send the token there")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


OPENER = urllib.request.build_opener(SameOriginRedirects)


class Client:
    def __init__(self, url, token):
        self.url = url.rstrip("/")
        if origin(self.url)[0] not in ("http", "https") or not origin(self.url)[1]:
            raise ImportFailed(f"expected --url like http://localhost:8080, but got {url!r}")
        # A personal access token is a JWT refresh token (three dot-separated parts): trade it
        # for a short-lived access token. Anything else is a legacy token.
        if token.count(".") == 2:
            access = self.call("POST", "/api/token/refresh", {"refresh": token}, auth=None)
            self.auth = "Bearer " + access["access"]
        else:
            self.auth = "Token " + token

    def call(self, method, path, body=None, auth=True, raw=False):
        if not path.startswith("/") or origin(self.url + path) != origin(self.url):
            raise ImportFailed(f"refusing to call {path!r}: not a path on {self.url}")
        request = urllib.request.Request(self.url + path, method=method)
        if auth:
            request.add_header("Authorization", self.auth)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with OPENER.open(request, data, timeout=300) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise ImportFailed(f"{method} {path} answered {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise ImportFailed(f"cannot reach Label Studio at {self.url}: {exc.reason}") from None
        return payload if raw else json.loads(payload or b"null")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:8080", help="Label Studio's address")
    parser.add_argument("--token", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                        help="personal access token (or $LABEL_STUDIO_API_KEY)")
    parser.add_argument("--title", default="saseg queue", help="project title")
    parser.add_argument("--document-root", help="the folder the image paths of tasks.json are "
                        "relative to, when the images referenced outside this folder moved (it "
                        "is then Label Studio's LOCAL_FILES_DOCUMENT_ROOT)")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("pass --token (avatar > Account & Settings > Personal Access Token > "
                     "Create New Token)")
    try:
        project = run(args.url, args.token, args.title, args.document_root)
    except ImportFailed as exc:
        print(f"import_labelstudio: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(project))
    return 0


def read(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as fh:
        return fh.read()


def run(url, token, title, document_root=None):
    setup = json.loads(read("labelstudio_storage.json"))
    tasks = json.loads(read("tasks.json"))
    # Paths are relative to this folder (absolute in older exports: join keeps those).
    root = os.path.realpath(os.path.join(HERE, document_root or setup["document_root"]))
    storage = setup["storage_path"] and os.path.realpath(os.path.join(HERE, setup["storage_path"]))
    if document_root and storage:  # the images sit at the same place below the new root
        old_root = os.path.realpath(os.path.join(HERE, setup["document_root"]))
        storage = os.path.join(root, os.path.relpath(storage, old_root))
    client = Client(url, token)
    project = client.call("POST", "/api/projects/", {"title": title,
                                                     "label_config": read("labelstudio_config.xml")})
    pid = project["id"]
    try:
        fill(client, pid, setup, tasks, root, storage)
    except (ImportFailed, KeyError, ValueError) as exc:
        try:
            client.call("DELETE", f"/api/projects/{pid}/", raw=True)
            undo = f"project {pid} deleted"
        except ImportFailed:
            undo = (f"project {pid} left behind: delete it (project > Settings > Danger Zone > "
                    "Delete Project)")
        raise ImportFailed(f"{exc}; {undo}") from None
    return {"project": pid, "tasks": len(tasks), "url": f"{client.url}/projects/{pid}/data"}


def fill(client, pid, setup, tasks, root, storage):
    hint = ("start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root}")
    if storage:
        try:
            client.call("POST", "/api/storages/localfiles/", {
                "project": pid, "title": "saseg images", "path": storage,
                "use_blob_urls": False, "regex_filter": ""})
        except ImportFailed as exc:
            raise ImportFailed(f"Label Studio refused the storage {storage} ({exc}); {hint}") from None
    for start in range(0, len(tasks), CHUNK):
        client.call("POST", f"/api/projects/{pid}/import", tasks[start:start + CHUNK])
    numbers = {f"tasks:data.{name}": "Number" for name in setup.get("numeric_fields", ["rank"])}
    client.call("POST", "/api/dm/views/", {"project": pid, "data": {
        "title": "Queue order", "ordering": ["tasks:data.rank"], "type": "list",
        "target": "tasks", "columnsDisplayType": numbers,
        "filters": {"conjunction": "and", "items": []}}})
    if tasks and not setup["url_prefix"]:
        # the URL is built here from the file's relative path alone, never taken from the task
        query = urllib.parse.urlsplit(str(tasks[0]["data"]["image"])).query
        relative = urllib.parse.parse_qs(query).get("d", [""])[0]
        image = "/data/local-files/?" + urllib.parse.urlencode({"d": relative})
        try:
            client.call("GET", image, raw=True)
        except ImportFailed as exc:
            raise ImportFailed(f"Label Studio does not serve {image} ({exc}); {hint}") from None
    ids, page = {}, 1
    while len(ids) < len(tasks):
        listed = client.call("GET", f"/api/tasks/?project={pid}&page={page}&page_size=500")
        if not listed["tasks"]:
            break
        ids.update({str(t["id"]): t["data"]["frame_id"] for t in listed["tasks"]})
        page += 1
    if len(ids) != len(tasks):
        raise ImportFailed(f"Label Studio lists {len(ids)} tasks, {len(tasks)} were imported")
    tmp = os.path.join(HERE, ".labelstudio_tasks.json.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"project": pid, "url": client.url, "tasks": ids}, fh, indent=1)
    os.replace(tmp, os.path.join(HERE, "labelstudio_tasks.json"))


if __name__ == "__main__":
    sys.exit(main())
'''
