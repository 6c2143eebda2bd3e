"""Atomic writes and the resumable part store."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from saseg.errors import FormatError
from saseg.io import PartStore, atomic_path, read_json, write_json, write_text


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.txt"
    write_text(path, "old")
    with pytest.raises(OSError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_write_makes_ordinary_permissions(tmp_path):
    write_text(tmp_path / "a.txt", "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_read_json_names_the_broken_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FormatError, match="bad.json"):
        read_json(tmp_path / "bad.json")
    with pytest.raises(FormatError, match="missing.json"):
        read_json(tmp_path / "missing.json")
    write_json(tmp_path / "ok.json", {"a": 1})
    assert read_json(tmp_path / "ok.json") == {"a": 1}


def test_part_store_resumes_and_concatenates_in_order(tmp_path):
    store = PartStore(tmp_path / "s.parquet", {"k": 1})
    store.write(1, pd.DataFrame({"i": [3, 2]}))
    store.write(0, pd.DataFrame({"i": [1]}))
    again = PartStore(tmp_path / "s.parquet", {"k": 1})
    assert again.done_chunks() == {0, 1}
    assert again.finish()["i"].tolist() == [1, 3, 2]
    assert again.finish(sort_by=["i"])["i"].tolist() == [1, 2, 3]
    with pytest.raises(FormatError, match="same settings"):
        PartStore(tmp_path / "s.parquet", {"k": 2})
    fresh = PartStore(tmp_path / "s.parquet", {"k": 2}, resume=False)
    assert fresh.done_chunks() == set()
    fresh.cleanup()
    assert not fresh.dir.exists()
