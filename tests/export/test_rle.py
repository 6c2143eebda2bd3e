"""Label Studio brush RLE: byte-identical to the reference encoder, exact round trips."""

import numpy as np
import pytest

from saseg.errors import DataError, FormatError
from saseg.export import rle

# Produced by label_studio_converter 0.0.59 brush.mask2rle (the reference encoder).
GOLDEN = [
    (np.array([[1, 0, 0], [1, 1, 0]], bool),
     [0, 0, 0, 24, 57, 27, 252, 127, 243, 128, 79, 255, 24, 0]),
    (np.ones((1, 1), bool), [0, 0, 0, 4, 57, 27, 252, 127, 224]),
    (np.ones((300, 300), bool),  # 360000 values: runs past 65536 are chunked
     [0, 5, 126, 64, 57, 27] + [255] * 17 + [254, 252, 127, 254]),
]


def _spec_decode(data):
    """The thi.ng rle-pack decoder, written out from its spec, one bit at a time."""
    bits = "".join(f"{b:08b}" for b in data)
    pos = 0

    def read(n):
        nonlocal pos
        pos += n
        return int(bits[pos - n:pos], 2)

    num, word = read(32), read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = []
    while len(out) < num:
        repeat = read(1)
        count = 1 + read(sizes[read(2)])
        out += [read(word)] * count if repeat else [read(word) for _ in range(count)]
    return np.array(out, dtype=np.uint8)


def _random_masks():
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (1, 7), (5, 3), (13, 17), (31, 9)]:
        yield rng.random((h, w)) < 0.5
        yield rng.random((h, w)) < 0.03
        yield np.zeros((h, w), bool)
        yield np.ones((h, w), bool)
    stripes = np.zeros((97, 801), bool)
    stripes[10:50, 3:700] = True  # runs of 9..16, 17..256 and > 256 values
    stripes[60, ::9] = True
    yield stripes


@pytest.mark.parametrize("mask, expected", GOLDEN)
def test_encode_matches_reference_bytes(mask, expected):
    assert rle.encode(mask) == expected


@pytest.mark.parametrize("index", range(21))
def test_round_trip_random_masks(index):
    mask = list(_random_masks())[index]
    encoded = rle.encode(mask)
    assert all(0 <= b <= 255 for b in encoded)
    expected = np.repeat(mask.reshape(-1).astype(np.uint8) * 255, 4)
    np.testing.assert_array_equal(_spec_decode(encoded), expected)
    np.testing.assert_array_equal(rle.decode(encoded, *mask.shape), mask)


def test_rgba_and_uint8_inputs():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (4, 5, 4), dtype=np.uint8)
    rgba[1:3] = 7  # some runs
    np.testing.assert_array_equal(_spec_decode(rle.encode(rgba)), rgba.reshape(-1))
    grey = rng.integers(0, 3, (6, 5)).astype(np.uint8) * 100
    np.testing.assert_array_equal(rle.decode_values(rle.encode(grey)),
                                  np.repeat(grey.reshape(-1), 4))


SDK_SCRIPT = """
import json, sys
import numpy as np
from label_studio_sdk.converter import brush
masks = np.load(sys.argv[1])
out = []
for key in sorted(masks.files, key=int):
    mask = masks[key]
    encoded = brush.mask2rle(mask.astype(np.uint8) * 255)
    out.append({"rle": [int(b) for b in encoded],
                "decoded": brush.decode_rle(encoded).reshape(-1)[::4].tolist()})
print(json.dumps(out))
"""


def test_matches_label_studios_own_encoder(labelstudio_python, tool_runner, tmp_path):
    """label_studio_sdk.converter.brush, in Label Studio's venv, on every test mask."""
    masks = list(_random_masks())
    np.savez(tmp_path / "masks.npz", **{str(i): m for i, m in enumerate(masks)})
    reference = tool_runner(labelstudio_python, SDK_SCRIPT, tmp_path / "masks.npz")
    assert len(reference) == len(masks)
    for mask, ref in zip(masks, reference):
        assert rle.encode(mask) == ref["rle"]
        np.testing.assert_array_equal(np.array(ref["decoded"]) == 255, mask.reshape(-1))
        # Our decoder reads Label Studio's own RLE as its decoder does.
        np.testing.assert_array_equal(rle.decode(ref["rle"], *mask.shape), mask)
        np.testing.assert_array_equal(rle.decode_values(ref["rle"])[::4], ref["decoded"])


@pytest.mark.parametrize("bad", [np.zeros((3, 4), np.int64), np.zeros((3, 4, 3), np.uint8),
                                 np.zeros((0, 4), bool), np.zeros(5, bool)])
def test_encode_rejects_bad_masks(bad):
    with pytest.raises(DataError, match="brush mask"):
        rle.encode(bad)


def test_decode_rejects_wrong_size_and_garbage():
    encoded = rle.encode(np.ones((3, 4), bool))
    with pytest.raises(FormatError, match="3x5"):
        rle.decode(encoded, 3, 5)
    with pytest.raises(FormatError, match="truncated"):
        rle.decode_values(encoded[:7])
    with pytest.raises(FormatError, match="bytes"):
        rle.decode_values([1, 2, 300, 4, 5, 6, 7])
    with pytest.raises(FormatError, match="bytes"):
        rle.decode_values([])
