"""Image decoding: bounded by the header before decoding, and truncation is an error."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from saseg.data.images import check_png_rows, read_image, read_index_label
from saseg.errors import DataError


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png(width: int, height: int, rows: int, *, colour: int = 0) -> bytes:
    """A grey (or RGB) 8-bit PNG declaring width x height, holding only `rows` rows of data."""
    channels = {0: 1, 2: 3}[colour]
    raw = b"".join(b"\x00" + bytes([200]) * (width * channels) for _ in range(rows))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def test_a_png_with_fewer_rows_than_declared_is_an_error(tmp_path):
    path = tmp_path / "short.png"
    path.write_bytes(_png(8, 10, 4))
    assert np.asarray(Image.open(path)).shape == (10, 8)  # PIL alone pads with black
    with pytest.raises(DataError, match=r"10 rows.*only about 4.*truncated"):
        read_index_label(path)
    path.write_bytes(_png(8, 10, 10, colour=2))
    assert read_image(path).shape == (10, 8, 3)


def test_whole_pngs_of_every_mode_pass(tmp_path):
    rng = np.random.default_rng(0)
    for mode, array in [("L", rng.integers(0, 255, (7, 9), dtype=np.uint8)),
                        ("RGB", rng.integers(0, 255, (7, 9, 3), dtype=np.uint8)),
                        ("RGBA", rng.integers(0, 255, (7, 9, 4), dtype=np.uint8)),
                        ("I;16", rng.integers(0, 60000, (7, 9)).astype(np.uint16)),
                        ("1", rng.integers(0, 2, (7, 9)).astype(bool))]:
        path = tmp_path / f"{mode.replace(';', '')}.png"
        Image.fromarray(array).save(path)
        check_png_rows(path)
    palette = Image.fromarray(rng.integers(0, 11, (7, 9), dtype=np.uint8)).convert("P")
    palette.save(tmp_path / "p.png")
    check_png_rows(tmp_path / "p.png")


def test_a_huge_declared_size_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(10_000, 10_000, 1))  # a few hundred bytes declaring 100 M pixels
    assert bomb.stat().st_size < 1000
    with pytest.raises(DataError, match=r"at most 50,000,000 pixels.*10000x10000.*SASEG_MAX_IMAGE_PIXELS"):
        read_image(bomb)
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(small)
    monkeypatch.setenv("SASEG_MAX_IMAGE_PIXELS", "500")
    with pytest.raises(DataError, match="at most 500 pixels"):
        read_image(small)
    monkeypatch.setenv("SASEG_MAX_IMAGE_PIXELS", "600")
    assert read_image(small).shape == (20, 30, 3)
    monkeypatch.setenv("SASEG_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(DataError, match="positive integer"):
        read_image(small)


def test_a_400_megapixel_image_gets_sasegs_size_message_not_unreadable(tmp_path, monkeypatch):
    """#23 item 9: beyond PIL's own limit (179 M pixels) it said "unreadable or truncated"."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored afterwards
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(_png(20_000, 20_000, 1))
    with pytest.raises(DataError, match=r"at most 50,000,000 pixels.*declares 400,000,000 pixels") as info:
        read_image(bomb)
    assert "unreadable" not in str(info.value)
    monkeypatch.setenv("SASEG_MAX_IMAGE_PIXELS", "300000000")  # a cap above PIL's: saseg's decides
    with pytest.raises(DataError, match=r"at most 300,000,000 pixels.*20000x20000"):
        read_image(bomb)
