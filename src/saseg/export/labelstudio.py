"""Label Studio export: one task per frame, in priority order, pre-annotated with brush masks.

Writes to ``out_dir``:

* ``tasks.json`` - a list of tasks in rank order. ``data`` holds ``image`` (URL), ``frame_id``,
  ``surprise`` and ``rank``, and every ``frame_<score>`` of the run (``frame_mdsa``,
  ``frame_entropy``, ``frame_risk``, ...), so the Data Manager can show and sort on them; ``predictions``
  holds one prediction (``model_version`` "saseg") with one ``brushlabels`` region per
  predicted class (Label Studio brush RLE, see `saseg.export.rle`). Its ``score`` is the
  priority ``1 - (i - 1) / n`` of the i-th of n tasks: Label Studio wants a score in [0, 1],
  and a surprise value has no fixed scale (``data.surprise`` keeps it).
* ``labelstudio_config.xml`` - the labelling interface: an ``Image`` and ``BrushLabels``
  with the class names and colours.
* ``labelstudio_storage.json`` - ``document_root`` and ``storage_path`` (below).
* ``import_labelstudio.py`` - the API import in one command (standard library only).
* ``IMPORT.md`` - the import steps, with this export's paths filled in.
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
from ..errors import DataError
from ..io import write_json, write_text
from . import rle
from .queue import ACCEPTED_COLUMN, ImageFn, PredictionFn, iter_items, prune, select_rows

logger = logging.getLogger(__name__)

FROM_NAME = "tag"
ACCEPTED_FIELD = "accepted_segments"  # task field: classes a segment plan accepted
TO_NAME = "image"


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
    queue : pandas.DataFrame
        The labelling plan: ``rank``, ``frame_id``, ``frame_index``, ``source``, ``score``,
        ``action``.
    out_dir : path
    classes : ClassInfo
    prediction_for : callable frame_id -> ndarray of shape (H, W), int
        The model's predicted class ids, exported as the pre-annotation.
    image_for : callable frame_id -> ndarray of shape (H, W, 3), uint8, optional
        Renders frames whose ``source`` is not an image file.
    copy : bool
        Copy source images into ``out_dir/images`` instead of referencing them in place.
    include_skipped : bool
        Export the ``action == "skip"`` rows too (all rows in rank order).
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
        tasks.append({
            "data": {"image": None, "frame_id": item.frame_id, "surprise": item.score,
                     "rank": item.rank, **item.frame_scores,
                     **({ACCEPTED_FIELD: ", ".join(item.accepted) or "none"} if marks else {})},
            "predictions": [{
                "model_version": "saseg",
                "score": None,
                "result": brush_results(item.prediction, classes, region_prefix=f"r{item.rank}"),
            }],
        })
    root, storage = serving_paths(items, out_dir, image_root, local_files=not url_prefix)
    for position, (task, image) in enumerate(zip(tasks, items)):
        task["data"]["image"] = image_url(image, root, url_prefix)
        task["predictions"][0]["score"] = 1.0 - position / len(tasks)

    prune(out_dir / "images", set(items))
    # Compact: every RLE byte on its own indented line would multiply the file size.
    write_text(out_dir / "tasks.json", json.dumps(tasks, separators=(",", ":")) + "\n")
    write_text(out_dir / "labelstudio_config.xml", labelstudio_config(classes, accepted=marks))
    write_json(out_dir / "labelstudio_storage.json",
               {"document_root": str(root), "storage_path": str(storage) if storage else None,
                "url_prefix": url_prefix, "tasks": len(tasks)})
    write_text(out_dir / "import_labelstudio.py", IMPORT_SCRIPT)
    write_text(out_dir / "IMPORT.md", _import_notes(out_dir, root, storage, url_prefix, len(tasks)))
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


def labelstudio_config(classes: ClassInfo, *, accepted: bool = False) -> str:
    """The labelling interface XML: an image with one brush label per class, in class colours;
    with `accepted`, a header above it names the task's accepted segments (``$accepted_segments``)."""
    labels = "\n".join(
        f"    <Label value={quoteattr(name)} background={quoteattr(_hex(colour))}/>"
        for name, colour in zip(classes.names, classes.colours)
    )
    return (
        "<View>\n"
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
    return "/data/local-files/?d=" + quote(relative)


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


def _import_notes(out_dir: Path, root: Path, storage: Path | None, url_prefix: str | None,
                  n: int) -> str:
    out_dir = out_dir.resolve()
    head = f"# Label Studio import ({n} frames, most surprising first)\n\n"
    config, tasks = out_dir / "labelstudio_config.xml", out_dir / "tasks.json"
    if url_prefix:
        return head + (
            f"Images are served from `{url_prefix}` (paths relative to `{root}`).\n\n"
            "1. Create a project; Settings > Labeling Interface > Code: paste "
            f"`{config}`.\n"
            f"2. Import `{tasks}`: each task carries the model's prediction as brush masks.\n"
            "3. Keep the priority order: in the Data Manager sort by `rank` ascending, then "
            "*Label Tasks As Displayed*.\n"
        )
    return head + (
        "## 1. Start Label Studio so that it serves this export's images\n\n"
        "```\nLABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \\\n"
        f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root} \\\n"
        "label-studio start\n```\n\n"
        "## 2. Import\n\n"
        "**With the API, in one command** (Label Studio 1.23 refuses the legacy token; use a "
        "personal access token: avatar > Account & Settings > Personal Access Token > Create):\n\n"
        f"```\npython {out_dir / 'import_labelstudio.py'} --url http://localhost:8080 "
        "--token <PERSONAL_ACCESS_TOKEN>\n```\n\n"
        "It creates the project from `labelstudio_config.xml`, adds a *Local files* source "
        f"storage at `{storage}` (not synced: the tasks come from `tasks.json`), imports "
        "`tasks.json` in queue order, checks that Label Studio serves the first image, and "
        "adds a Data Manager tab *Queue order* sorted by `rank`. Your token goes to the "
        "`--url` origin only: the script refuses a redirect to another scheme, host or port, "
        "and builds every URL itself (never from `tasks.json`). The same steps by hand:\n\n"
        "**In the browser:**\n\n"
        f"1. Create a project; Settings > Labeling Interface > Code: paste `{config}`.\n"
        "2. Settings > Cloud Storage > Add Source Storage > *Local files*, absolute local path "
        f"`{storage}`. Add it, but do not sync it. (Label Studio refuses the document root "
        "itself as a storage; this folder is below it.)\n"
        f"3. Import `{tasks}`: each task carries the model's prediction as brush masks (edit "
        "them rather than painting from scratch).\n"
        "4. Keep the priority order: in the Data Manager sort by `rank` ascending, then "
        "*Label Tasks As Displayed* (or Settings > Annotation > Task Sampling: Sequential).\n"
    )


IMPORT_SCRIPT = r'''"""Import this saseg queue into a running Label Studio (>= 1.20) through its API.

    python import_labelstudio.py --url http://localhost:8080 --token PERSONAL_ACCESS_TOKEN

Start Label Studio first with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<document_root of labelstudio_storage.json>.
Creates a project from labelstudio_config.xml, adds the Local files storage (not synced),
imports tasks.json in queue order and adds a Data Manager tab sorted by rank. Needs only
Python's standard library. Prints the project URL; exits 1 with one line on failure.
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
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("pass --token (avatar > Account & Settings > Personal Access Token)")
    try:
        project = run(args.url, args.token, args.title)
    except ImportFailed as exc:
        print(f"import_labelstudio: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(project))
    return 0


def run(url, token, title):
    def read(name):
        with open(os.path.join(HERE, name), encoding="utf-8") as fh:
            return fh.read()

    setup = json.loads(read("labelstudio_storage.json"))
    tasks = json.loads(read("tasks.json"))
    client = Client(url, token)
    project = client.call("POST", "/api/projects/", {"title": title,
                                                     "label_config": read("labelstudio_config.xml")})
    pid = project["id"]
    hint = ("start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={setup['document_root']}")
    if setup["storage_path"]:
        try:
            client.call("POST", "/api/storages/localfiles/", {
                "project": pid, "title": "saseg images", "path": setup["storage_path"],
                "use_blob_urls": False, "regex_filter": ""})
        except ImportFailed as exc:
            raise ImportFailed(f"project {pid} created, but Label Studio refused the storage "
                               f"{setup['storage_path']} ({exc}); {hint}") from None
    for start in range(0, len(tasks), CHUNK):
        client.call("POST", f"/api/projects/{pid}/import", tasks[start:start + CHUNK])
    client.call("POST", "/api/dm/views/", {"project": pid, "data": {
        "title": "Queue order", "ordering": ["tasks:data.rank"], "type": "list",
        "target": "tasks", "filters": {"conjunction": "and", "items": []}}})
    if tasks and not setup["url_prefix"]:
        # the URL is built here from the file's relative path alone, never taken from the task
        query = urllib.parse.urlsplit(str(tasks[0]["data"]["image"])).query
        relative = urllib.parse.parse_qs(query).get("d", [""])[0]
        image = "/data/local-files/?" + urllib.parse.urlencode({"d": relative})
        try:
            client.call("GET", image, raw=True)
        except ImportFailed as exc:
            raise ImportFailed(f"project {pid} imported, but Label Studio does not serve "
                               f"{image} ({exc}); {hint}") from None
    return {"project": pid, "tasks": len(tasks), "url": f"{client.url}/projects/{pid}/data"}


if __name__ == "__main__":
    sys.exit(main())
'''
