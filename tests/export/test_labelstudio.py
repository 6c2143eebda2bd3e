"""Label Studio export: queue order, exact brush pre-annotations, config, image references."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saseg.data.classes import ClassInfo
from saseg.layout import frame_stem
from saseg.errors import DataError
from saseg.export import export_labelstudio, export_queue, rle

CLASSES = ClassInfo(names=("Road", 'Lane & "mark" <x>', "Car"),
                    colours=((128, 64, 128), (255, 255, 0), (64, 0, 128)), ignore_index=255)
SIZES = {"d003/00012": (7, 9), "d003/00001": (5, 13), "still": (6, 4), "d004/00002": (3, 3)}


def _setup(tmp_path):
    """A shuffled queue: one image file, two video frames, one skipped frame."""
    rng = np.random.default_rng(0)
    still = tmp_path / "src" / "still.png"
    still.parent.mkdir(exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)).save(still)
    queue = pd.DataFrame({
        "rank": [3, 1, 2, 4],
        "frame_id": ["still", "d003/00012", "d003/00001", "d004/00002"],
        "frame_index": [0, 12, 1, 2],
        "source": [str(still), "video:drive.mp4", "video:drive.mp4", "video:drive.mp4"],
        "score": [5.0, 9.5, 7.25, 1.0],
        "action": ["label", "label", "label", "skip"],
    })
    preds = {}
    for fid, (h, w) in SIZES.items():
        p = rng.integers(0, 3, (h, w))
        p[p == 1] = 2 if fid == "d003/00001" else 1  # class 1 absent from one frame
        p[0, 0] = 255  # an ignored pixel
        preds[fid] = p
    calls = []

    def image_for(fid):
        calls.append(fid)
        h, w = SIZES[fid]
        return np.full((h, w, 3), len(fid), np.uint8)

    return queue, preds, image_for, calls


def _export(tmp_path, **kw):
    queue, preds, image_for, calls = _setup(tmp_path)
    out = export_labelstudio(queue, out_dir=tmp_path / "ls", classes=CLASSES,
                             prediction_for=preds.__getitem__, image_for=image_for, **kw)
    return json.loads((out / "tasks.json").read_text()), preds, calls, out


def test_tasks_in_priority_order_with_sortable_fields(tmp_path):
    tasks, _, _, _ = _export(tmp_path)
    assert [t["data"]["frame_id"] for t in tasks] == ["d003/00012", "d003/00001", "still"]
    assert [t["data"]["rank"] for t in tasks] == [1, 2, 3]
    assert [t["data"]["surprise"] for t in tasks] == [9.5, 7.25, 5.0]
    # Without a quality model the prediction has no score: the queue priority is not the
    # model's confidence (a labeller would read it so).
    assert all("score" not in t["predictions"][0] for t in tasks)
    assert all(t["predictions"][0]["model_version"] == "saseg" for t in tasks)


def test_include_skipped(tmp_path):
    tasks, _, _, _ = _export(tmp_path, include_skipped=True)
    assert [t["data"]["rank"] for t in tasks] == [1, 2, 3, 4]


def test_brush_regions_decode_to_the_prediction(tmp_path):
    tasks, preds, _, _ = _export(tmp_path)
    for task in tasks:
        pred = preds[task["data"]["frame_id"]]
        h, w = pred.shape
        rebuilt = np.full((h, w), 255)
        results = task["predictions"][0]["result"]
        for r in results:
            assert (r["from_name"], r["to_name"], r["type"]) == ("tag", "image", "brushlabels")
            assert (r["original_height"], r["original_width"], r["image_rotation"]) == (h, w, 0)
            assert r["value"]["format"] == "rle"
            painted = rle.decode(r["value"]["rle"], h, w)
            assert (rebuilt[painted] == 255).all()  # regions do not overlap
            rebuilt[painted] = CLASSES.names.index(r["value"]["brushlabels"][0])
        np.testing.assert_array_equal(rebuilt, pred)
        present = {CLASSES.names[c] for c in np.unique(pred) if c < 3}
        assert {r["value"]["brushlabels"][0] for r in results} == present
        assert len({r["id"] for r in results}) == len(results)


def test_config_lists_classes_with_colours(tmp_path):
    _, _, _, out = _export(tmp_path)
    root = ET.fromstring((out / "labelstudio_config.xml").read_text())
    image, brush = root.find("Image"), root.find("BrushLabels")
    assert image.attrib == {"name": "image", "value": "$image", "zoom": "true"}
    assert brush.attrib == {"name": "tag", "toName": "image"}
    labels = brush.findall("Label")
    assert [l.attrib["value"] for l in labels] == list(CLASSES.names)
    assert [l.attrib["background"] for l in labels] == ["#804080", "#ffff00", "#400080"]


def test_image_urls_local_files_and_prefix(tmp_path):
    tasks, _, _, out = _export(tmp_path)
    # Images in tmp/src and tmp/ls/images: the storage is tmp, the document root above it
    # (Label Studio refuses a storage equal to its root).
    setup = json.loads((out / "labelstudio_storage.json").read_text())
    # Relative to the export folder, so the folder can move.
    assert (setup["document_root"], setup["storage_path"]) == ("../..", "..")
    root, storage = (out / setup["document_root"]).resolve(), (out / setup["storage_path"]).resolve()
    assert (root, storage) == (tmp_path.resolve().parent, tmp_path.resolve())
    paths = [root / unquote(t["data"]["image"].split("?d=", 1)[1]) for t in tasks]
    assert all(t["data"]["image"].startswith("/data/local-files/?d=") for t in tasks)
    assert paths[2] == (tmp_path / "src" / "still.png").resolve()  # referenced, not copied
    assert paths[0].parent == (out / "images").resolve() and paths[0].is_file()
    notes = (out / "IMPORT.md").read_text()
    assert 'LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="$(cd ../.. && pwd)"' in notes
    assert str(tmp_path) not in notes  # nothing absolute: the folder can move

    tasks, _, _, out = _export(tmp_path, copy=True, image_root=tmp_path / "ls",
                               url_prefix="http://host:8081/data/")
    urls = [t["data"]["image"] for t in tasks]
    assert urls[2] == f"http://host:8081/data/images/{frame_stem('still')}.png"
    assert urls[0] == f"http://host:8081/data/images/{frame_stem('d003/00012')}.png"
    assert (out / "images" / f"{frame_stem('still')}.png").read_bytes() == (tmp_path / "src/still.png").read_bytes()


def test_default_root_is_the_export_folder_when_it_holds_the_images(tmp_path):
    tasks, _, _, out = _export(tmp_path, copy=True)
    setup = json.loads((out / "labelstudio_storage.json").read_text())
    assert (setup["document_root"], setup["storage_path"]) == (".", "images")
    notes = (out / "IMPORT.md").read_text()
    assert 'LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="$PWD"' in notes
    for step in ("--no-browser", "--port", "--data-dir", "LATEST_VERSION_CHECK=false",
                 "Create New Token", "--username", "saseg labels import"):
        assert step in notes
    assert [t["data"]["image"].split("?d=")[1].split("/")[0] for t in tasks] == ["images"] * 3


def test_image_root_must_hold_the_images(tmp_path):
    with pytest.raises(DataError, match="image_root"):
        _export(tmp_path, image_root=tmp_path / "elsewhere")


def test_image_root_equal_to_the_images_folder_is_refused(tmp_path):
    # Label Studio rejects a Local files storage equal to LOCAL_FILES_DOCUMENT_ROOT.
    with pytest.raises(DataError, match="strictly below"):
        _export(tmp_path, copy=True, image_root=tmp_path / "ls" / "images")


def test_video_frames_written_once(tmp_path):
    _, _, calls, out = _export(tmp_path)
    assert sorted(calls) == ["d003/00001", "d003/00012"]
    first = out / "images" / f"{frame_stem('d003/00012')}.png"
    np.testing.assert_array_equal(np.asarray(Image.open(first)), np.full((7, 9, 3), 10, np.uint8))
    stamp = first.stat().st_mtime_ns
    _, _, calls, _ = _export(tmp_path)  # fresh setup, same out dir
    assert calls == [] and first.stat().st_mtime_ns == stamp


def test_export_queue_dispatches(tmp_path):
    queue, preds, image_for, _ = _setup(tmp_path)
    out = export_queue(queue, to="labelstudio", out_dir=tmp_path / "q", classes=CLASSES,
                       prediction_for=preds.__getitem__, image_for=image_for)
    assert Path(out, "tasks.json").is_file()


# ---- the token goes only where the user sent it (#23, item 4) ------------------------------
import http.server
import threading
import types as _types


def _import_script():
    from saseg.export.labelstudio import IMPORT_SCRIPT

    module = _types.ModuleType("import_labelstudio")
    module.__file__ = "import_labelstudio.py"
    exec(compile(IMPORT_SCRIPT, "import_labelstudio.py", "exec"), module.__dict__)
    return module


def _server(handler_body):
    """A local HTTP server on a free port; `handler_body(handler)` answers each GET."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append((self.path, self.headers.get("Authorization")))
            handler_body(self)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def _answer(handler, code=200, location=None):
    handler.send_response(code)
    if location:
        handler.send_header("Location", location)
    handler.send_header("Content-Type", "application/json")
    handler.end_headers()
    handler.wfile.write(b"{}")


def test_token_sent_to_another_origin_on_redirect_is_refused():
    script = _import_script()
    other, other_seen = _server(_answer)
    target = f"http://127.0.0.1:{other.server_address[1]}/api/projects/"
    ls, ls_seen = _server(lambda h: _answer(h, 302, target) if h.path == "/away" else
                          _answer(h, 302, "/here") if h.path == "/same" else _answer(h))
    try:
        client = script.Client(f"http://127.0.0.1:{ls.server_address[1]}", "legacy-token")
        with pytest.raises(script.ImportFailed, match="redirected to another origin"):
            client.call("GET", "/away")
        assert other_seen == []  # the other port never saw the token (nor any request)
        assert client.call("GET", "/same") == {}  # a redirect within the origin is followed
        assert ls_seen[-1] == ("/here", "Token legacy-token")
        for path in ("@evil.example:80/x", "http://evil.example/x"):  # task data cannot steer it
            with pytest.raises(script.ImportFailed, match="not a path on"):
                client.call("GET", path)
    finally:
        other.shutdown()
        ls.shutdown()


def test_token_origin_promise_is_in_import_md(tmp_path):
    _, _, _, out = _export(tmp_path)
    assert "refuses a redirect to another scheme, host or port" in (out / "IMPORT.md").read_text()


def test_prediction_score_is_the_models_confidence_and_the_page_shows_rank_and_risk(tmp_path):
    queue, preds, image_for, _ = _setup(tmp_path)
    queue["frame_risk"] = [0.25, 0.5, 1.5, 0.0]  # 1.5: out of range, clipped
    queue["frame_mdsa"] = [3.0, 9.0, 4.0, 1.0]
    out = export_labelstudio(queue, out_dir=tmp_path / "ls", classes=CLASSES,
                             prediction_for=preds.__getitem__, image_for=image_for)
    tasks = json.loads((out / "tasks.json").read_text())
    assert [t["data"]["frame_id"] for t in tasks] == ["d003/00012", "d003/00001", "still"]
    assert [t["predictions"][0]["score"] for t in tasks] == [0.5, 0.0, 0.75]  # 1 - risk
    assert [t["data"]["frame_risk"] for t in tasks] == [0.5, 1.5, 0.25]  # numbers, not text
    header = ET.fromstring((out / "labelstudio_config.xml").read_text()).find("Header")
    assert header.attrib["value"] == "rank $rank · risk $frame_risk"
    setup = json.loads((out / "labelstudio_storage.json").read_text())
    assert set(setup["numeric_fields"]) == {"rank", "surprise", "frame_risk", "frame_mdsa"}
    assert json.loads((out / "saseg_classes.json").read_text())["names"] == list(CLASSES.names)


def test_header_names_only_fields_every_task_has(tmp_path):
    _, _, _, out = _export(tmp_path)
    header = ET.fromstring((out / "labelstudio_config.xml").read_text()).find("Header")
    assert header.attrib["value"] == "rank $rank · surprise $surprise"
