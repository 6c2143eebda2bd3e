import imageio_ffmpeg
import numpy as np
import pytest

from saseg.errors import DataError
from saseg.viz.video import write_video

LEVELS = [15 + 24 * i for i in range(10)]  # one distinct flat brightness per frame index


def _frames(h=32, w=48, levels=LEVELS):
    return [np.full((h, w, 3), v, np.uint8) for v in levels]


def _read(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    return meta, frames


def test_writes_h264_mp4_with_all_frames_in_order(tmp_path):
    path = tmp_path / "out" / "review.mp4"
    assert write_video(iter(_frames()), path, fps=np.int64(10), progress=False) == path
    meta, frames = _read(path)
    assert "h264" in meta["codec"]
    assert meta["fps"] == pytest.approx(10)
    assert meta["size"] == (48, 32)
    assert len(frames) == len(LEVELS)
    means = [f.mean() for f in frames]
    np.testing.assert_allclose(means, LEVELS, atol=4)
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # +faststart: index first, for streaming
    assert [p.name for p in path.parent.iterdir()] == ["review.mp4"]  # no temp file left


def test_odd_sizes_are_padded_to_even(tmp_path):
    frames = _frames(h=31, w=45, levels=[200, 200, 200])
    path = write_video(frames, tmp_path / "odd.mp4", progress=False)
    meta, decoded = _read(path)
    assert meta["size"] == (46, 32)
    assert len(decoded) == 3
    assert abs(decoded[0][:30, :44].mean() - 200) < 4  # padded, not rescaled: content in place


def _failing():
    yield np.zeros((8, 8, 3), np.uint8)
    raise RuntimeError("renderer crashed")


@pytest.mark.parametrize("frames, kwargs, error", [
    ([], {}, DataError),
    ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)], {}, DataError),
    ([np.zeros((8, 8, 3), np.float32)], {}, DataError),
    ([np.zeros((8, 8), np.uint8)], {}, DataError),
    ([np.zeros((8, 8, 3), np.uint8)], {"fps": 0}, DataError),
    ([np.zeros((8, 8, 3), np.uint8)], {"fps": float("nan")}, DataError),
    ([np.zeros((8, 8, 3), np.uint8)], {"fps": "10"}, DataError),
    (_failing(), {}, RuntimeError),
])
def test_failures_leave_no_file(tmp_path, frames, kwargs, error):
    path = tmp_path / "bad.mp4"
    with pytest.raises(error):
        write_video(frames, path, progress=False, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_an_existing_video(tmp_path):
    path = tmp_path / "keep.mp4"
    path.write_bytes(b"old")
    with pytest.raises(DataError):
        write_video([np.zeros((8, 8, 3), np.float32)], path, progress=False)
    assert path.read_bytes() == b"old"
