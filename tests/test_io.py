"""Atomic writes and the resumable part store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from saseg.errors import FormatError
from saseg.io import (PartStore, atomic_path, check_settings, compare_settings, read_json, write_json,
                      write_text)


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
    with pytest.raises(FormatError, match=r"same settings.*k: 1 -> 2.*--no-resume"):
        PartStore(tmp_path / "s.parquet", {"k": 2})
    assert read_json(again.dir / "settings.json") == {"k": 1}
    fresh = PartStore(tmp_path / "s.parquet", {"k": 2}, resume=False)
    assert fresh.done_chunks() == set()
    fresh.cleanup()
    assert not fresh.dir.exists()


def test_check_settings_writes_new_then_accepts_the_same(tmp_path):
    path = tmp_path / "sub" / "settings.json"
    settings = {"lr": 0.01, "size": (48, 64), "n": np.int64(3), "out": Path("x")}
    check_settings(path, settings)  # absent: written
    assert read_json(path) == {"lr": 0.01, "size": [48, 64], "n": 3, "out": "x"}
    before = path.read_bytes()
    check_settings(path, settings)
    check_settings(path, {"out": "x", "n": 3, "size": [48, 64], "lr": 0.01})  # tuples == lists, any order
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["settings.json"]  # written atomically


def test_check_settings_refuses_a_changed_key_and_names_it(tmp_path):
    path = tmp_path / "settings.json"
    check_settings(path, {"train": {"lr": 0.02, "epochs": 2}, "seed": 0, "test": "a"})
    with pytest.raises(FormatError, match="delete it") as info:
        check_settings(path, {"train": {"lr": 0.03, "epochs": 2}, "seed": 0, "extra": [1, 2]})
    msg = str(info.value)
    assert str(path) in msg and "same settings" in msg
    assert "train.lr: 0.02 -> 0.03" in msg and "extra: (absent) -> [1, 2]" in msg
    assert 'test: "a" -> (absent)' in msg and "seed" not in msg and "epochs" not in msg
    assert json.loads(path.read_text())["train"]["lr"] == 0.02  # the saved settings are kept
    with pytest.raises(FormatError, match=r"same fit/score settings.*; start over"):
        check_settings(path, {}, what="fit/score settings", fresh="start over")


def test_compare_settings_only_compares(tmp_path):
    compare_settings({"size": [1, 2]}, {"size": (1, 2)}, "result.json")
    with pytest.raises(FormatError, match=r"result.json: .*settings: null -> "):
        compare_settings(None, {"a": 1}, "result.json")
    with pytest.raises(FormatError, match=r"k\d: .* and 2 more"):
        compare_settings({f"k{i}": i for i in range(7)}, {}, "result.json")
    assert list(tmp_path.iterdir()) == []


def test_output_lock_is_reentrant_and_marks_only_a_writer_that_stopped_halfway(tmp_path):
    """#23 item 1: the pid stays in the lock file after Ctrl-C or a kill, not after an error."""
    from saseg.errors import DataError
    from saseg.io import LOCK_NAME, check_not_unfinished, output_lock

    folder = tmp_path / "out"
    with output_lock(folder):
        with output_lock(folder):  # the same process again: no refusal of itself
            check_not_unfinished(folder)  # a folder this process holds can be read by it
        assert (folder / LOCK_NAME).read_text().strip() == f"pid {os.getpid()}"
    assert (folder / LOCK_NAME).read_text() == ""
    with pytest.raises(ValueError):
        with output_lock(folder):
            raise ValueError("bad input")  # an ordinary error: finished, nothing half-written
    check_not_unfinished(folder)
    with pytest.raises(KeyboardInterrupt):
        with output_lock(folder):
            raise KeyboardInterrupt
    with pytest.raises(DataError, match=f"stopped halfway \\(pid {os.getpid()}\\)"):
        check_not_unfinished(folder)
    with output_lock(folder):
        pass
    check_not_unfinished(folder)  # the next writer that finishes clears it


def test_a_writer_that_fails_before_writing_leaves_no_trace(tmp_path):
    """A refused command leaves neither its lock file nor the folders it made; one that wrote,
    was interrupted, or found the folder in use leaves them."""
    from saseg.io import LOCK_NAME, output_lock

    made = tmp_path / "new" / "out"
    with pytest.raises(ValueError):
        with output_lock(made):
            with output_lock(made):  # re-entrant: only the last hold tidies
                raise ValueError("bad input")
    assert list(tmp_path.iterdir()) == []
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(ValueError):
        with output_lock(existing):
            raise ValueError("bad input")
    assert existing.is_dir() and list(existing.iterdir()) == []  # its lock file goes, the folder stays
    with pytest.raises(ValueError):
        with output_lock(made):
            (made / "part.csv").write_text("x\n")
            raise ValueError("failed halfway")
    assert sorted(p.name for p in made.iterdir()) == [LOCK_NAME, "part.csv"]
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        with output_lock(interrupted):
            raise KeyboardInterrupt
    assert [p.name for p in interrupted.iterdir()] == [LOCK_NAME]  # marked unfinished, kept


def test_json_nested_too_deeply_is_one_clear_error(tmp_path):
    from saseg.errors import FormatError
    from saseg.io import read_json

    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(FormatError, match="nests too deeply"):
        read_json(path)
