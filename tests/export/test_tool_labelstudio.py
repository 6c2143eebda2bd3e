"""The Label Studio export against a real Label Studio server, following IMPORT.md.

Starts label-studio (from .venv-tools/labelstudio) on 127.0.0.1 on a free port with its data
in a temp folder and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT = the export folder, as IMPORT.md
says; signs in, creates a personal access token, runs the export's own import_labelstudio.py,
then reads everything back through Label Studio's API: tasks and predictions, served images,
the Data Manager's order, and an annotation through Label Studio's own export.
"""

import http.cookiejar
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from saseg.data import open_dataset
from saseg.export import export_labelstudio, rle
from saseg.export import check_export
from saseg.export.labels_import import import_labels, label_spec
from saseg.export.labelstudio import brush_results

pytestmark = pytest.mark.slow

EMAIL, PASSWORD = "saseg@example.com", "saseg-test-Passw0rd"
START_TIMEOUT_S = 420  # the first start runs every migration: 70-140 s here


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(labelstudio_python, tmp_path_factory):
    """A fresh Label Studio serving local files from an (empty) export folder."""
    export_dir = tmp_path_factory.mktemp("ls_export")
    data_dir = tmp_path_factory.mktemp("ls_data")
    port = _free_port()
    # The user's shell may set USERNAME / PASSWORD, which Label Studio reads as its defaults.
    env = {k: v for k, v in os.environ.items()
           if k not in ("USERNAME", "PASSWORD") and not k.startswith("LABEL_STUDIO_")}
    env.update(LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
               LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(export_dir),
               LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), LATEST_VERSION_CHECK="false",
               COLLECT_ANALYTICS="false", SENTRY_DSN="", FRONTEND_SENTRY_DSN="")
    log = (data_dir / "server.log").open("w")
    process = subprocess.Popen(
        [str(Path(labelstudio_python).parent / "label-studio"), "start", "--no-browser",
         "--internal-host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir),
         "--username", EMAIL, "--password", PASSWORD],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"label-studio exited with {process.returncode}:\n"
                            + (data_dir / "server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"label-studio did not answer within {START_TIMEOUT_S} s:\n"
                            + (data_dir / "server.log").read_text()[-3000:])
            time.sleep(2)
        yield url, export_dir
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the PID we started, and its children
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def token(server):
    return _personal_access_token(server[0])  # one per user: a second one is refused


def _personal_access_token(url: str) -> str:
    """Sign in as a user would, then Account & Settings > Personal Access Token > Create."""
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    browser.open(url + "/user/login/").read()
    csrf = lambda: next(c.value for c in jar if c.name == "csrftoken")  # noqa: E731
    form = urllib.parse.urlencode({"email": EMAIL, "password": PASSWORD,
                                   "csrfmiddlewaretoken": csrf()}).encode()
    browser.open(urllib.request.Request(url + "/user/login/", form,
                                        headers={"Referer": url + "/user/login/"})).read()
    request = urllib.request.Request(url + "/api/token/", b"{}", method="POST", headers={
        "X-CSRFToken": csrf(), "Referer": url + "/", "Content-Type": "application/json"})
    return json.loads(browser.open(request).read())["token"]


class Api:
    def __init__(self, url, token):
        self.url = url
        self.auth = "Bearer " + self.call("POST", "/api/token/refresh", {"refresh": token},
                                          auth=False)["access"]

    def call(self, method, path, body=None, auth=True, raw=False):
        request = urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode())
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", self.auth)
        with urllib.request.urlopen(request, timeout=120) as response:
            payload = response.read()
        return payload if raw else json.loads(payload)


def test_round_trip_through_a_real_server(server, token, tool_queue):
    url, export_dir = server
    q = tool_queue
    export_labelstudio(q.queue, out_dir=export_dir, classes=q.classes,
                       prediction_for=q.prediction_for, image_for=q.image_for)
    assert check_export(export_dir, "labelstudio", prediction_for=q.prediction_for,
                        expected_order=q.order).ok

    # IMPORT.md's one command, run as a user would.
    done = subprocess.run([sys.executable, str(export_dir / "import_labelstudio.py"),
                           "--url", url, "--token", token], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    project = json.loads(done.stdout)["project"]
    api = Api(url, token)

    # Every task imported, with its prediction attached.
    views = api.call("GET", f"/api/dm/views/?project={project}")
    assert [v["data"]["title"] for v in views] == ["Queue order"]
    listed = api.call("GET", f"/api/tasks/?project={project}&view={views[0]['id']}&page_size=100")
    assert listed["total"] == len(q.order) and listed["total_predictions"] == len(q.order)
    # The Data Manager's view sorted by rank returns the queue order ...
    assert [t["data"]["frame_id"] for t in listed["tasks"]] == q.order
    assert [t["data"]["frame_risk"] for t in listed["tasks"]] == [0.9, 0.4, 0.35, 0.2, 0.1]
    # ... because it sorts: the same view reversed gives the reverse.
    api.call("PATCH", f"/api/dm/views/{views[0]['id']}/", {"project": project, "data": {
        **views[0]["data"], "ordering": ["-tasks:data.rank"]}})
    reverse = api.call("GET", f"/api/tasks/?project={project}&view={views[0]['id']}&page_size=100")
    assert [t["data"]["frame_id"] for t in reverse["tasks"]] == q.order[::-1]

    sent = {t["data"]["frame_id"]: t for t in json.loads((export_dir / "tasks.json").read_text())}
    for listed_task in listed["tasks"]:
        task = api.call("GET", f"/api/tasks/{listed_task['id']}/")
        frame_id = task["data"]["frame_id"]
        assert len(task["predictions"]) == 1
        assert task["predictions"][0]["result"] == sent[frame_id]["predictions"][0]["result"]
        # Every image URL is served, byte for byte the file.
        image = api.call("GET", task["data"]["image"], raw=True)
        relative = urllib.parse.unquote(task["data"]["image"].split("?d=", 1)[1])
        assert image == (export_dir / relative).read_bytes()

    # A prediction submitted unchanged as an annotation comes back through Label Studio's
    # own export and decodes to the prediction mask.
    first = api.call("GET", f"/api/tasks/{listed['tasks'][0]['id']}/")
    api.call("POST", f"/api/tasks/{first['id']}/annotations/",
             {"result": first["predictions"][0]["result"], "was_cancelled": False})
    exported = api.call("GET", f"/api/projects/{project}/export?exportType=JSON")
    assert len(exported) == 1 and len(exported[0]["annotations"]) == 1
    frame_id = exported[0]["data"]["frame_id"]
    pred = q.preds[frame_id]
    rebuilt = np.full(pred.shape, 255)
    for region in exported[0]["annotations"][0]["result"]:
        painted = rle.decode(region["value"]["rle"], region["original_height"],
                             region["original_width"])
        rebuilt[painted] = q.classes.names.index(region["value"]["brushlabels"][0])
    np.testing.assert_array_equal(rebuilt, pred)


def test_import_script_names_an_unserved_document_root(server, token, tool_queue, tmp_path):
    """Exported elsewhere than the server's document root: one clear line, exit 1."""
    url, _ = server
    q = tool_queue
    other = tmp_path / "elsewhere"
    export_labelstudio(q.queue, out_dir=other, classes=q.classes,
                       prediction_for=q.prediction_for, image_for=q.image_for)
    done = subprocess.run([sys.executable, str(other / "import_labelstudio.py"), "--url", url,
                           "--token", token, "--title", "elsewhere"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=" + str(other.resolve()) in lines[0]


def test_segment_marks_round_trip(server, token, tool_queue):
    """A segment plan's accepted classes: Label Studio accepts the config's header over them and
    keeps each task's accepted_segments field."""
    url, export_dir = server
    q = tool_queue
    marks = {fid: "Road;Sky" for fid in q.order[:2]}
    queue = q.queue.assign(accepted_classes=q.queue["frame_id"].map(marks).fillna(""))
    out = export_dir / "segment_plan"
    export_labelstudio(queue, out_dir=out, classes=q.classes, prediction_for=q.prediction_for,
                       image_for=q.image_for, image_root=export_dir)
    done = subprocess.run([sys.executable, str(out / "import_labelstudio.py"), "--url", url, "--token", token,
                           "--title", "segment plan"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    project = json.loads(done.stdout)["project"]
    api = Api(url, token)
    assert "$accepted_segments" in api.call("GET", f"/api/projects/{project}/")["label_config"]
    listed = api.call("GET", f"/api/tasks/?project={project}&page_size=100")
    got = {t["data"]["frame_id"]: t["data"]["accepted_segments"] for t in listed["tasks"]}
    assert got == {fid: "Road, Sky" if fid in marks else "none" for fid in q.order}


def test_labels_come_back_from_label_studio_json_and_png(server, token, tool_queue, tmp_path):
    """The loop through a real Label Studio: the export is moved to the server's document root
    before its import; labellers submit some predictions unchanged, edit others and skip one;
    Label Studio exports JSON and PNG; the export folder moves again; `saseg labels import`
    gives back exactly what was submitted, under the right frame ids."""
    url, served = server
    q = tool_queue
    export_labelstudio(q.queue, out_dir=tmp_path / "written", classes=q.classes,
                       prediction_for=q.prediction_for, image_for=q.image_for)
    for old in served.iterdir():  # the server's document root takes the moved export
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    for item in (tmp_path / "written").iterdir():
        shutil.move(str(item), served / item.name)
    assert check_export(served, "labelstudio", prediction_for=q.prediction_for,
                        expected_order=q.order).ok
    done = subprocess.run([sys.executable, str(served / "import_labelstudio.py"), "--url", url,
                           "--token", token, "--title", "round trip"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    project = json.loads(done.stdout)["project"]
    api = Api(url, token)
    view = api.call("GET", f"/api/dm/views/?project={project}")[0]
    assert view["data"]["columnsDisplayType"]["tasks:data.frame_risk"] == "Number"
    assert view["data"]["columnsDisplayType"]["tasks:data.rank"] == "Number"
    listed = api.call("GET", f"/api/tasks/?project={project}&view={view['id']}&page_size=100")["tasks"]
    assert [t["data"]["frame_id"] for t in listed] == q.order
    recorded = json.loads((served / "labelstudio_tasks.json").read_text())["tasks"]
    assert {int(k): v for k, v in recorded.items()} == {t["id"]: t["data"]["frame_id"] for t in listed}

    submitted = {}
    for i, task in enumerate(listed[:4]):
        frame_id = task["data"]["frame_id"]
        if i == 2:  # skipped
            api.call("POST", f"/api/tasks/{task['id']}/annotations/", {"result": [], "was_cancelled": True})
            continue
        label = q.preds[frame_id].copy()
        if i % 2:  # edited: a car block painted, the pole erased
            label[-6:, 2:12] = 1
            label[label == 2] = 0
        submitted[frame_id] = label
        api.call("POST", f"/api/tasks/{task['id']}/annotations/",
                 {"result": brush_results(label, q.classes), "was_cancelled": False})
    (tmp_path / "ls.json").write_bytes(api.call("GET", f"/api/projects/{project}/export?exportType=JSON", raw=True))
    (tmp_path / "ls_png.zip").write_bytes(
        api.call("GET", f"/api/projects/{project}/export?exportType=BRUSH_TO_PNG", raw=True))

    moved = tmp_path / "moved" / "export"
    shutil.copytree(served, moved)
    for source, out in ((tmp_path / "ls.json", tmp_path / "from_json"),
                        (tmp_path / "ls_png.zip", tmp_path / "from_png")):
        report = import_labels("labelstudio", moved, source, out)
        assert report.ok and sorted(report.imported) == sorted(submitted), report.describe()
        assert sorted(report.unlabelled) == sorted(set(q.order) - set(submitted))
        frames = {f.frame_id: f for f in open_dataset(label_spec(out))}
        assert sorted(frames) == sorted(submitted)
        for frame_id, label in submitted.items():
            np.testing.assert_array_equal(frames[frame_id].label, label)
            np.testing.assert_array_equal(frames[frame_id].image, q.images[frame_id])


def test_failed_import_deletes_the_project_it_created(server, token, tool_queue, tmp_path):
    url, _ = server
    q = tool_queue
    other = tmp_path / "elsewhere"
    export_labelstudio(q.queue, out_dir=other, classes=q.classes,
                       prediction_for=q.prediction_for, image_for=q.image_for)
    api = Api(url, token)
    before = {p["id"] for p in api.call("GET", "/api/projects/?page_size=100")["results"]}
    done = subprocess.run([sys.executable, str(other / "import_labelstudio.py"), "--url", url,
                           "--token", token, "--title", "doomed"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "deleted" in done.stderr, done.stderr
    after = {p["id"] for p in api.call("GET", "/api/projects/?page_size=100")["results"]}
    assert after == before


def test_labels_from_label_studio_evaluate_a_scored_run(server, token, tiny_run, tmp_path):
    """A scored run's plan through Label Studio and back: the labellers submit the ground truth,
    and `evaluate --labelled-only` on the imported labels gives the run's own IoU."""
    import pandas as pd

    from conftest import TEST_SPEC
    from saseg.evaluation import evaluate
    from saseg.export.run import export_plan
    from saseg.layout import RunDir

    url, served = server
    for old in served.iterdir():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    export_plan(tiny_run / "plan" / "plan.csv", to="labelstudio", out_dir=served)
    done = subprocess.run([sys.executable, str(served / "import_labelstudio.py"), "--url", url,
                           "--token", token, "--title", "scored run"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    project = json.loads(done.stdout)["project"]
    api = Api(url, token)
    truth = {f.frame_id: f.label for f in open_dataset(TEST_SPEC)}
    classes = RunDir(tiny_run).classes()
    tasks = api.call("GET", f"/api/tasks/?project={project}&page_size=100")["tasks"]
    for task in tasks:
        api.call("POST", f"/api/tasks/{task['id']}/annotations/",
                 {"result": brush_results(truth[task["data"]["frame_id"]], classes),
                  "was_cancelled": False})
    (tmp_path / "ls.json").write_bytes(api.call("GET", f"/api/projects/{project}/export?exportType=JSON", raw=True))
    report = import_labels("labelstudio", served, tmp_path / "ls.json", tmp_path / "labels")
    assert report.ok and len(report.imported) == len(tasks)
    summary = evaluate(tiny_run / "scores.parquet", label_spec(tmp_path / "labels"), tmp_path / "eval",
                       plots=False, progress=False, labelled_only=True)
    assert summary["n_frames"] == len(tasks)
    mine = pd.read_parquet(tmp_path / "eval" / "iou.parquet")
    own = pd.read_parquet(tiny_run / "eval" / "iou.parquet")
    merged = mine.merge(own, on=["frame_id", "kind", "target"], suffixes=("", "_own"))
    assert len(merged) == len(mine)
    np.testing.assert_allclose(merged["iou"], merged["iou_own"])
