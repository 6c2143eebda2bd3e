"""Label Studio's brush RLE: how a `brushlabels` region's pixels travel inside a task.

Label Studio stores a brush mask as the flattened (H, W, 4) RGBA uint8 image, run-length
coded with thi.ng's ``rle-pack`` bit layout (``label_studio_converter/brush.py``;
``label_studio_sdk.converter.brush`` holds the same code):

* header: 32 bits value count ``N = H*W*4``, 5 bits ``wordsize - 1`` (= 7), then four
  4-bit ``size - 1`` fields for the run-length widths ``[3, 4, 8, 16]``;
* per run of ``L`` equal values ``v``: 1 flag bit (1 = repeat run, 0 = literal block),
  2 bits choosing the width ``s`` of the length field, ``L - 1`` in ``s`` bits, then ``v``
  in 8 bits. A single value is a literal block of length 1 (``0 00 000 v``); runs longer
  than 256 use the 16-bit field and are split into chunks of at most 65536;
* zero padding to a whole byte: ``8 - nbits % 8`` bits, so a full zero byte is added when
  the stream is already aligned (a quirk of the reference encoder, kept so our output is
  byte-identical).

The Label Studio frontend reads the alpha channel; like the reference ``mask2rle`` we write
the mask value into all four channels.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError, FormatError

WORD_SIZE = 8
RLE_SIZES = (3, 4, 8, 16)
_MAX_CHUNK = 2**16


def encode(mask: np.ndarray) -> list[int]:
    """Encode a brush mask in Label Studio's RLE, byte-identical to the reference encoder.

    Parameters
    ----------
    mask : ndarray of shape (H, W) bool or uint8, or (H, W, 4) uint8
        A bool mask becomes 255 (painted) / 0; an (H, W) uint8 mask is repeated into the
        four RGBA channels; an (H, W, 4) array is taken as the RGBA image itself.

    Returns
    -------
    list of int
        The RLE bytes (0..255), as Label Studio expects in ``value.rle``.
    """
    values = _rgba_values(mask)
    # Runs of equal values (the reference's base_rle_encode).
    change = np.flatnonzero(values[1:] != values[:-1])
    ends = np.append(change, values.size - 1)
    lengths = np.diff(np.append(-1, ends)).astype(np.int64)
    run_values = values[ends].astype(np.int64)

    # Runs longer than 256 take the 16-bit length field, in chunks of at most 65536.
    long = lengths > 256
    n_chunks = np.where(long, -(-lengths // _MAX_CHUNK), 1)
    run = np.repeat(np.arange(lengths.size), n_chunks)
    first_chunk = np.repeat(np.cumsum(n_chunks) - n_chunks, n_chunks)
    chunk = np.arange(run.size) - first_chunk
    chunk_len = np.where(long[run], np.minimum(_MAX_CHUNK, lengths[run] - chunk * _MAX_CHUNK),
                         lengths[run])

    size_index = np.select([long[run], chunk_len > 16, chunk_len > 8], [3, 2, 1], 0)
    size_bits = np.asarray(RLE_SIZES, dtype=np.int64)[size_index]
    flag = (chunk_len > 1).astype(np.int64)
    widths = 3 + size_bits + WORD_SIZE
    fields = (
        (flag << (2 + size_bits + WORD_SIZE))
        | (size_index << (size_bits + WORD_SIZE))
        | ((chunk_len - 1) << WORD_SIZE)
        | run_values[run]
    )

    header_fields = [values.size, WORD_SIZE - 1, *[s - 1 for s in RLE_SIZES]]
    header_widths = [32, 5, 4, 4, 4, 4]
    bits = _to_bits(np.concatenate([header_fields, fields]),
                    np.concatenate([header_widths, widths]))
    padding = 8 - bits.size % 8
    bits = np.concatenate([bits, np.zeros(padding, dtype=np.uint8)])
    return np.packbits(bits).tolist()


def decode_values(rle) -> np.ndarray:
    """Decode Label Studio RLE bytes to the flat value array.

    Returns
    -------
    ndarray of shape (N,), uint8
        For a brush mask, the flattened (H, W, 4) RGBA image.
    """
    data = np.asarray(rle, dtype=np.int64)
    if data.ndim != 1 or data.size < 7 or data.min() < 0 or data.max() > 255:
        raise FormatError(
            f"Expected Label Studio RLE as a list of at least 7 bytes, but got {data.size} "
            "values" + ("" if data.size == 0 or data.ndim != 1 else f" in {data.min()}..{data.max()}")
            + "."
        )
    bits = np.unpackbits(data.astype(np.uint8)).tobytes().translate(bytes.maketrans(b"\0\1", b"01"))
    bits = bits.decode("ascii")
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > len(bits):
            raise FormatError("Expected a complete Label Studio RLE stream, but it is truncated.")
        pos += n
        return int(bits[pos - n:pos], 2)

    num = read(32)
    word_size = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8 if word_size <= 8 else np.uint32)
    i = 0
    while i < num:
        repeat = read(1)
        j = min(num, i + 1 + read(sizes[read(2)]))
        if repeat:
            out[i:j] = read(word_size)
        else:
            out[i:j] = [read(word_size) for _ in range(j - i)]
        i = j
    return out


def decode(rle, height: int, width: int) -> np.ndarray:
    """Decode a brush mask to a boolean (H, W) array (alpha channel > 0, as Label Studio draws).

    Raises
    ------
    FormatError
        If the RLE does not hold ``height * width * 4`` values.
    """
    values = decode_values(rle)
    if values.size != height * width * 4:
        raise FormatError(
            f"Expected RLE of an RGBA image of {height}x{width} ({height * width * 4} values), "
            f"but got {values.size} values."
        )
    return values.reshape(height, width, 4)[:, :, 3] > 0


def _rgba_values(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 2 and mask.dtype == bool:
        mask = mask.astype(np.uint8) * 255
    if mask.ndim == 2 and mask.dtype == np.uint8:
        mask = np.repeat(mask[:, :, None], 4, axis=2)
    if mask.ndim != 3 or mask.shape[2] != 4 or mask.dtype != np.uint8 or mask.size == 0:
        raise DataError(
            "Expected a brush mask of shape (H, W) bool/uint8 or (H, W, 4) uint8, but got shape "
            f"{mask.shape} and dtype {mask.dtype}."
        )
    return mask.reshape(-1)


def _to_bits(values: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Concatenate each value's `width` low bits, most significant first, as a 0/1 array."""
    values = np.asarray(values, dtype=np.int64)
    widths = np.asarray(widths, dtype=np.int64)
    field = np.repeat(np.arange(values.size), widths)
    offset = np.arange(field.size) - np.repeat(np.cumsum(widths) - widths, widths)
    shift = widths[field] - 1 - offset
    return ((values[field] >> shift) & 1).astype(np.uint8)
