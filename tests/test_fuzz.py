"""Fuzzing the image and mask loaders with random and mutated PNG bytes (hypothesis).

Every case writes one file and reads it through every loader a user's data reaches:
`load_image` (RGB and grey), `load_mask` (index with a class check, palette, channel) and
`vggunet.predict.read_image`. Each call must either return a well-formed array or raise the
package's own error (`DataError`, `PredictionError`): no other exception, no crash, no hang (a
case over `CASE_TIMEOUT_S` fails).

Mutations are structure-aware: chunks of valid PNGs of every colour type are changed (IHDR
sizes, bit depths and colour types; decompressed IDAT bytes; PLTE/tRNS contents; chunks added,
dropped or reordered) and their CRCs recomputed, so the bytes get past the signature and CRC
checks into PIL's decoders; raw bit flips and truncations cover the rest. PIL's decompression
bomb limit is lowered to 1 Mpx for the run, so a header claiming a huge image is refused
quickly (and must come back as a clean error, not `DecompressionBombError`).
"""

from __future__ import annotations

import io
import signal
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vggunet.data import DataError, load_image, load_mask  # noqa: E402
from vggunet.predict import PredictionError, read_image  # noqa: E402

RANDOM_CASES = 1400
MUTATED_CASES = 3800
MIN_CASES = 5000
CASE_TIMEOUT_S = 10
PALETTE = [(0, 0, 0), (255, 0, 0), (0, 255, 0)]


def _png(array: np.ndarray, mode: str | None = None, **save) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    image.save(buffer, "PNG", **save)
    return buffer.getvalue()


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    small = rng.integers(0, 3, (6, 7)).astype(np.uint8)
    palette_img = Image.fromarray(small, "L").convert("P")
    palette_img.putpalette([v for c in PALETTE for v in c] + [0] * (768 - 9))
    buffer = io.BytesIO()
    palette_img.save(buffer, "PNG", transparency=0)
    return [
        _png(small),                                                       # L 8-bit
        _png(rng.integers(0, 3, (5, 6, 3)).astype(np.uint8)),             # RGB
        _png(rng.integers(0, 255, (4, 5, 4)).astype(np.uint8), "RGBA"),   # RGBA
        _png(rng.integers(0, 3, (5, 5)).astype(np.uint16)),               # I;16
        _png(rng.integers(0, 255, (3, 4, 2)).astype(np.uint8), "LA"),     # LA
        _png(small > 0),                                                   # 1-bit
        buffer.getvalue(),                                                 # P with tRNS
        _png(np.asarray(PALETTE * 4, np.uint8).reshape(3, 4, 3)),         # palette colours
    ]


SEEDS = _seeds()
SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunks(data: bytes) -> list[list]:
    chunks, i = [], len(SIGNATURE)
    while i + 8 <= len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        chunks.append([data[i + 4:i + 8], bytearray(data[i + 8:i + 8 + length])])
        i += 12 + length
    return chunks


def _build(chunks: list[list]) -> bytes:
    out = bytearray(SIGNATURE)
    for kind, body in chunks:
        body = bytes(body)
        out += struct.pack(">I", len(body)) + kind + body
        out += struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return bytes(out)


_DIMENSIONS = (0, 1, 2, 3, 31, 255, 4096, 65535, 1 << 20, 2**31 - 1, 2**32 - 1)
_CHUNK_KINDS = (b"PLTE", b"tRNS", b"IDAT", b"IEND", b"IHDR", b"gAMA", b"sBIT", b"pHYs",
                b"tEXt", b"zTXt", b"iCCP", b"acTL", b"fdAT", b"eXIf")
OPS = ("ihdr_width", "ihdr_height", "ihdr_depth", "ihdr_colour", "ihdr_interlace", "idat_bytes",
       "idat_truncate", "chunk_byte", "drop_chunk", "add_chunk", "swap_chunks", "raw_flip",
       "raw_truncate", "raw_insert")


def mutate(seed: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    """Applies mutation ops (name, a, b) deterministically; CRCs stay valid except for raw ops."""
    chunks = _chunks(seed)
    raw: list[tuple[str, int, int]] = []
    for op, a, b in ops:
        if op.startswith("raw_"):
            raw.append((op, a, b))
            continue
        if not chunks:
            continue
        ihdr = next((c for c in chunks if c[0] == b"IHDR" and len(c[1]) >= 13), None)
        if op in ("ihdr_width", "ihdr_height") and ihdr:
            offset = 0 if op == "ihdr_width" else 4
            value = _DIMENSIONS[a % len(_DIMENSIONS)] if b % 3 else a & 0xFFFFFFFF
            ihdr[1][offset:offset + 4] = struct.pack(">I", value)
        elif op == "ihdr_depth" and ihdr:
            ihdr[1][8] = (0, 1, 2, 4, 8, 16, 3, 32, 255)[a % 9]
        elif op == "ihdr_colour" and ihdr:
            ihdr[1][9] = (0, 2, 3, 4, 6, 1, 5, 7, 255)[a % 9]
        elif op == "ihdr_interlace" and ihdr:
            ihdr[1][12] = a % 3
        elif op in ("idat_bytes", "idat_truncate"):
            idat = [c for c in chunks if c[0] == b"IDAT"]
            if not idat:
                continue
            chunk = idat[a % len(idat)]
            try:
                pixels = bytearray(zlib.decompress(bytes(chunk[1])))
            except zlib.error:
                pixels = bytearray(chunk[1])
            if pixels and op == "idat_bytes":
                pixels[b % len(pixels)] = a & 0xFF
                pixels[(a >> 8) % len(pixels)] ^= b & 0xFF
            elif op == "idat_truncate":
                pixels = pixels[: b % (len(pixels) + 1)]
            chunk[1] = bytearray(zlib.compress(bytes(pixels)))
        elif op == "chunk_byte":
            chunk = chunks[a % len(chunks)]
            if chunk[1]:
                chunk[1][b % len(chunk[1])] = (a >> 8) & 0xFF
        elif op == "drop_chunk" and len(chunks) > 1:
            del chunks[a % len(chunks)]
        elif op == "add_chunk":
            body = struct.pack(">QQ", a, b)[: b % 17]
            chunks.insert(a % (len(chunks) + 1), [_CHUNK_KINDS[b % len(_CHUNK_KINDS)],
                                                  bytearray(body)])
        elif op == "swap_chunks" and len(chunks) > 1:
            i, j = a % len(chunks), b % len(chunks)
            chunks[i], chunks[j] = chunks[j], chunks[i]
    data = bytearray(_build(chunks))
    for op, a, b in raw:
        if not data:
            break
        if op == "raw_flip":
            data[a % len(data)] ^= 1 << (b % 8)
        elif op == "raw_truncate":
            data = data[: a % (len(data) + 1)]
        elif op == "raw_insert":
            position = a % (len(data) + 1)
            data[position:position] = struct.pack(">Q", b)[: 1 + a % 8]
    return bytes(data)


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout(f"a loader took more than {CASE_TIMEOUT_S} s")


def check_all_loaders(path: Path, data: bytes, stats: dict) -> None:
    """Writes `data` to `path` and runs every loader; only clean errors are allowed."""
    path.write_bytes(data)
    calls = (
        ("image_rgb", lambda: load_image(path, channels=3)),
        ("image_grey", lambda: load_image(path, channels=1)),
        ("mask_index", lambda: load_mask(path, "index", num_classes=3)),
        ("mask_palette", lambda: load_mask(path, "palette", palette=PALETTE)),
        ("mask_channel", lambda: load_mask(path, "channel", mask_channel=1)),
        ("predict_read", lambda: read_image(path, channels=3)),
    )
    signal.alarm(CASE_TIMEOUT_S)
    try:
        for name, call in calls:
            try:
                result = call()
            except (DataError, PredictionError) as exc:
                assert str(path) in str(exc), f"{name}: message does not name the file: {exc}"
                stats["clean_errors"] += 1
                continue
            stats["loads"] += 1
            assert isinstance(result, np.ndarray) and result.size > 0, name
            if name.startswith("image"):
                channels = 3 if name == "image_rgb" else 1
                assert result.dtype == np.float32 and result.ndim == 3
                assert result.shape[2] == channels
                assert np.isfinite(result).all() and result.min() >= 0 and result.max() <= 255
            elif name.startswith("mask"):
                assert result.dtype == np.int32 and result.ndim == 2
                if name == "mask_index":
                    assert result.min() >= 0 and result.max() <= 2
                if name == "mask_palette":
                    assert set(np.unique(result).tolist()) <= {0, 1, 2}
            else:
                assert result.dtype == np.float32 and result.ndim in (2, 3)
    finally:
        signal.alarm(0)
    stats["cases"] += 1


FUZZ_SETTINGS = dict(deadline=None, database=None, derandomize=True,
                     phases=(Phase.explicit, Phase.generate),
                     suppress_health_check=list(HealthCheck))


@pytest.fixture()
def small_bomb_limit():
    previous_limit = Image.MAX_IMAGE_PIXELS
    previous_handler = signal.signal(signal.SIGALRM, _alarm)
    Image.MAX_IMAGE_PIXELS = 1_000_000  # > 2 Mpx raises DecompressionBombError in PIL
    yield
    Image.MAX_IMAGE_PIXELS = previous_limit
    signal.signal(signal.SIGALRM, previous_handler)


def test_seeds_are_valid_pngs_of_every_kind():
    modes = set()
    for data in SEEDS:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            modes.add(image.mode)
    assert {"L", "RGB", "RGBA", "I;16", "LA", "1", "P"} <= modes
    # A mutation keeps CRCs valid: PIL gets to decode the changed header.
    wide = mutate(SEEDS[0], [("ihdr_width", 6, 1)])  # width 4096 on a 7-px-wide image
    with Image.open(io.BytesIO(wide)) as image:
        assert image.size == (4096, 6)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.filterwarnings("ignore::UserWarning")  # PIL's notes on odd palettes and APNGs
def test_fuzz_image_and_mask_loaders(tmp_path, small_bomb_limit):
    stats = {"cases": 0, "clean_errors": 0, "loads": 0}
    path = tmp_path / "fuzz.png"
    start = time.perf_counter()

    @settings(max_examples=RANDOM_CASES, **FUZZ_SETTINGS)
    @given(st.one_of(st.binary(max_size=300),
                     st.binary(max_size=200).map(lambda b: SIGNATURE + b)))
    def random_bytes(data: bytes) -> None:
        check_all_loaders(path, data, stats)

    @settings(max_examples=MUTATED_CASES, **FUZZ_SETTINGS)
    @given(st.sampled_from(range(len(SEEDS))),
           st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 2**32 - 1),
                              st.integers(0, 2**32 - 1)), min_size=1, max_size=5))
    def mutated_png(seed: int, ops: list) -> None:
        check_all_loaders(path, mutate(SEEDS[seed], ops), stats)

    random_bytes()
    random_cases = stats["cases"]
    mutated_png()
    wall = time.perf_counter() - start
    print(f"\nfuzz cases: {stats['cases']} ({random_cases} random, "
          f"{stats['cases'] - random_cases} mutated PNG) in {wall:.1f} s; "
          f"{stats['loads']} loads, {stats['clean_errors']} clean errors")
    assert stats["cases"] >= MIN_CASES
    # Both outcomes occur: the mutations reach successful decodes, not only rejections.
    assert stats["loads"] > 1000 and stats["clean_errors"] > 1000
