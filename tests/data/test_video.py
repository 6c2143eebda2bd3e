import imageio_ffmpeg
import numpy as np
import pytest

from saseg.data.specs import open_dataset
from saseg.data.video import open_video, select_frames
from saseg.errors import DataError

N, FPS, H, W = 12, 10, 16, 32


def _frame(k):
    y, x, c = np.mgrid[:H, :W, :3]
    return (10 * k + x + 4 * y + 20 * c).astype(np.uint8)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A lossless (FFV1, RGB) 12-frame video, so decoded pixels can be compared exactly."""
    path = tmp_path_factory.mktemp("video") / "drive.mkv"
    writer = imageio_ffmpeg.write_frames(str(path), (W, H), fps=FPS, codec="ffv1",
                                         pix_fmt_out="bgr0", macro_block_size=1)
    writer.send(None)
    for k in range(N):
        writer.send(_frame(k).tobytes())
    writer.close()
    return path


def test_iterates_all_frames(video):
    ds = open_video(video)
    frames = list(ds)
    assert len(ds) == N and ds.classes is None and not ds.has_labels
    assert [f.frame_id for f in frames] == [f"drive/{k:06d}" for k in range(N)]
    for k, f in enumerate(frames):
        assert f.index == k and f.label is None and f.timestamp == pytest.approx(k / FPS)
        np.testing.assert_array_equal(f.image, _frame(k))
    ds.close()


def test_random_access_seeks(video):
    ds = open_video(video)
    for i in (7, 2, 3, 11, 0, -1):
        np.testing.assert_array_equal(ds[i].image, _frame(i % N))
    ds.close()


@pytest.mark.parametrize("options, expected", [
    ({"stride": 5}, [0, 5, 10]), ({"fps": 5.0}, [0, 2, 4, 6, 8, 10]), ({"fps": 4.0}, [0, 3, 5, 8, 10])])
def test_stride_and_fps(video, options, expected):
    ds = open_video(video, **options)
    assert [f.frame_id for f in ds] == [f"drive/{k:06d}" for k in expected]
    np.testing.assert_array_equal(ds[1].image, _frame(expected[1]))
    ds.close()


def test_select_frames_brute_force():
    for n, native, fps in [(30, 30.0, 7.0), (31, 29.97, 10.0), (5, 25.0, 25.0)]:
        times = np.arange(n) / native
        ticks = np.arange(0, n / native, 1 / fps)
        reference = sorted({int(np.argmin(np.abs(times - t - 1e-9))) for t in ticks})
        assert select_frames(n, native, fps=fps) == reference


def test_spec_and_classes(video, tmp_path):
    ds = open_dataset(f"video:{video}?stride=4&names=road,car")
    assert ds.spec == f"video:{video}?names=road,car&stride=4" and len(ds) == 3
    assert ds.classes.names == ("road", "car")
    again = open_dataset(ds.spec)
    assert [again.frame_id(i) for i in range(3)] == ["drive/000000", "drive/000004", "drive/000008"]


def test_bad_videos(video, tmp_path):
    with pytest.raises(DataError, match="both"):
        open_video(video, stride=2, fps=5)
    with pytest.raises(DataError, match="at most"):
        open_video(video, fps=30)
    with pytest.raises(DataError, match="no.mp4"):
        open_video(tmp_path / "no.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="junk.mp4"):
        open_video(junk)
