"""The report's readers: a missing table is None, a malformed one a FormatError naming the file."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from saseg.errors import FormatError
from saseg.report.inputs import read_csv, read_parquet, require_columns

TABLE = pd.DataFrame({"target": ["Car", "Road", "Sky"], "rho": [-0.5, 0.25, np.nan],
                      "n_frames": [10, 12, 3]})


def naming(path) -> str:
    return re.escape(str(path))


def test_read_csv_returns_the_table_or_none_when_missing(tmp_path):
    assert read_csv(tmp_path / "absent.csv", ["target"]) is None
    path = tmp_path / "correlation.csv"
    TABLE.to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_csv(path, ["target", "rho"]), TABLE)
    pd.testing.assert_frame_equal(read_csv(path, [], nrows=2), TABLE.iloc[:2])


@pytest.mark.parametrize("content", [
    b"",                                          # empty file
    b"a,b\n1,2\n3,4,5,6\n",                       # a row with too many fields
    b'a,"b\n1,2\n',                               # an unterminated quote
    b"target,rho\n\xff\xfe\xfa,1\n",              # not UTF-8
], ids=["empty", "ragged", "quote", "encoding"])
def test_read_csv_malformed_is_a_format_error_naming_the_file(tmp_path, content):
    path = tmp_path / "tradeoff.csv"
    path.write_bytes(content)
    with pytest.raises(FormatError, match=naming(path)):
        read_csv(path, [])


def test_read_csv_missing_columns_name_the_file_and_the_columns(tmp_path):
    path = tmp_path / "max_skip.csv"
    TABLE.to_csv(path, index=False)
    with pytest.raises(FormatError, match=naming(path)) as raised:
        read_csv(path, ["target", "max_skip", "risk"])
    assert "['max_skip', 'risk']" in str(raised.value) and "'target'" in str(raised.value)


def test_read_csv_unreadable_path_is_a_format_error(tmp_path):
    path = tmp_path / "correlation.csv"
    path.mkdir()
    with pytest.raises(FormatError, match=naming(path)):
        read_csv(path, [])


def test_read_parquet_returns_the_table_or_none_when_missing(tmp_path):
    assert read_parquet(tmp_path / "absent.parquet") is None
    path = tmp_path / "frames.parquet"
    TABLE.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(read_parquet(path), TABLE, check_dtype=False)


def _truncated(tmp_path):
    whole = tmp_path / "whole.parquet"
    pd.DataFrame({"a": np.arange(500), "b": np.linspace(0, 1, 500)}).to_parquet(whole)
    return whole.read_bytes()[: whole.stat().st_size // 2]


@pytest.mark.parametrize("make", [
    lambda tmp_path: b"",
    lambda tmp_path: b"not a parquet file at all",
    _truncated,
    lambda tmp_path: b"a,b\n1,2\n",  # a CSV under a Parquet name
], ids=["empty", "junk", "truncated", "csv"])
def test_read_parquet_malformed_is_a_format_error_naming_the_file(tmp_path, make):
    path = tmp_path / "scores.parquet"
    path.write_bytes(make(tmp_path))
    with pytest.raises(FormatError, match=naming(path)):
        read_parquet(path)


def test_require_columns(tmp_path):
    require_columns(TABLE, ["rho", "target"], tmp_path / "t.csv")
    require_columns(TABLE, [], tmp_path / "t.csv")
    with pytest.raises(FormatError, match=naming(tmp_path / "t.csv")) as raised:
        require_columns(TABLE, ["target", "p"], tmp_path / "t.csv")
    message = str(raised.value)
    assert "['p']" in message and "['target', 'rho', 'n_frames']" in message
