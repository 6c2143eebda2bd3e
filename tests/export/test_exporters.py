"""The exporter table: a new tool is one module plus one registration, with no edit to the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from saseg.cli import app
from saseg.errors import DataError
from saseg.export import EXPORTERS, Exporter, check_export, export_queue, exporter, register_exporter
from saseg.export.check import DecodedMask, unlabelled_outside
from saseg.export.queue import iter_items, select_rows
from saseg.io import write_json


def _write_toy(queue, *, out_dir, classes, prediction_for, image_for=None, copy=False,
               include_skipped=False, stride=1):
    """A toy tool: every frame's prediction as a JSON list of lists, in rank order."""
    rows = select_rows(queue, include_skipped=include_skipped)
    records = [{"frame_id": it.frame_id, "rank": it.rank, "mask": it.prediction[::stride, ::stride].tolist()}
               for it in iter_items(rows, out_dir=out_dir, classes=classes, prediction_for=prediction_for,
                                    image_for=image_for, materialise="reference")]
    write_json(out_dir / "toy.json", {"frames": records, "num_classes": classes.num_classes})
    return out_dir


def _check_toy(out_dir, check):
    toy = json.loads((out_dir / "toy.json").read_text())
    n = toy["num_classes"]
    return [(f["frame_id"], f["rank"], DecodedMask(unlabelled_outside(np.asarray(f["mask"]), n), n))
            for f in toy["frames"]]


@pytest.fixture
def toy_tool():
    register_exporter("toy", Exporter(_write_toy, _check_toy, "toy.json", options=("stride",)))
    yield EXPORTERS["toy"]
    EXPORTERS.pop("toy")


def test_a_registered_tool_exports_and_checks(tool_queue, toy_tool):
    q = tool_queue
    export_queue(q.queue, to="toy", out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                 image_for=q.image_for)
    check = check_export(q.out, "toy", prediction_for=q.prediction_for, expected_order=q.order)
    assert check.ok, check.describe()
    with pytest.raises(DataError, match=r"options of the toy export among \['stride'\].*image_root"):
        export_queue(q.queue, to="toy", out_dir=q.out, classes=q.classes,
                     prediction_for=q.prediction_for, image_root="/")


def test_the_cli_offers_a_registered_tool(tiny_run, tmp_path, toy_tool):
    plan = tiny_run / "plan" / "plan.csv"
    result = CliRunner().invoke(app, ["export", "--plan", str(plan), "--to", "toy", "-o", str(tmp_path / "t"),
                                      "--check"])
    assert result.exit_code == 0, result.output
    assert "toy:" in result.output and "order verified" in result.output
    assert (tmp_path / "t" / "toy.json").is_file()


def test_unknown_tools_and_bad_names_are_refused():
    with pytest.raises(DataError, match="export target in"):
        exporter("coco")
    with pytest.raises(DataError, match="exporter name"):
        register_exporter("../x", EXPORTERS["cvat"])
    result = CliRunner().invoke(app, ["export", "--plan", "p.csv", "--to", "coco", "-o", "x"])
    assert result.exit_code == 2 and "expected a labelling tool in" in result.output
