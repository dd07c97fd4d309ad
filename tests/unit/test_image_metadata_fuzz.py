"""Every image that decodes either serves or is refused naming the field: metadata never escapes.

Containers (PNG, JPEG, WebP) carrying EXIF, ICC, XMP and text metadata that is garbage, truncated or
randomly mutated go through decode_image; the only outcomes allowed are an RGB image or
InvalidRequest. (Before the decode guard covered EXIF, a PNG eXIf chunk of "GARBAGEGARBAGE" raised
SyntaxError out of decode_image and failed the whole batch with INTERNAL.)
"""

import io
import random
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from kontext_engine import InvalidRequest
from kontext_engine.codecs import decode_image

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PIL warns about the corrupt EXIF it reads
GARBAGE = b"GARBAGEGARBAGE"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_chunk(kind: bytes, data: bytes, size=(24, 16)) -> bytes:
    """A valid PNG with one extra chunk inserted right after IHDR (CRC correct, content arbitrary)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, format="PNG")
    raw = buffer.getvalue()
    after_ihdr = 8 + 4 + 4 + 13 + 4
    return raw[:after_ihdr] + png_chunk(kind, data) + raw[after_ihdr:]


def jpeg_with_segment(marker: int, payload: bytes, size=(24, 16)) -> bytes:
    """A valid JPEG with one APPn segment inserted right after SOI."""
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, format="JPEG")
    raw = buffer.getvalue()
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload
    return raw[:2] + segment + raw[2:]


def pil_saved(fmt: str, size=(24, 16), **options) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def exif_with_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def tiff_exif_header(rng: random.Random) -> bytes:
    """A TIFF header that parses, followed by IFD entries with random tags, types and offsets."""
    entries = rng.randint(0, 6)
    body = struct.pack("<H", entries)
    for _ in range(entries):
        body += struct.pack("<HHII", rng.choice([0x0112, 0x8769, 0x8825, rng.randrange(65536)]),
                            rng.randrange(20), rng.choice([0, 1, 2**31, 2**32 - 1]), rng.randrange(2**32))
    return b"II*\x00" + struct.pack("<I", 8) + body + rng.randbytes(rng.randint(0, 16))


def metadata_blobs(rng: random.Random):
    yield GARBAGE
    yield b""
    yield b"Exif\x00\x00" + GARBAGE
    yield b"MM\x00*" + GARBAGE
    yield tiff_exif_header(rng)
    yield exif_with_orientation(rng.choice([0, 3, 6, 8, 9, 255]))
    valid = exif_with_orientation(6)
    yield valid[: rng.randint(1, len(valid) - 1)]
    yield rng.randbytes(rng.randint(1, 300))


def cases(rng: random.Random):
    """(description, encoded image) pairs."""
    for round_ in range(12):
        for blob in metadata_blobs(rng):
            tag = f"round {round_}, {len(blob)}-byte blob"
            yield f"png eXIf ({tag})", png_with_chunk(b"eXIf", blob)
            yield f"png iCCP ({tag})", png_with_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(blob))
            yield f"png iCCP raw ({tag})", png_with_chunk(b"iCCP", blob)
            yield f"png zTXt ({tag})", png_with_chunk(b"zTXt", b"Raw profile type exif\x00\x00" + blob)
            yield f"png iTXt xmp ({tag})", png_with_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x01\x00\x00\x00" + blob)
            yield f"png tEXt ({tag})", png_with_chunk(b"tEXt", blob)
            yield f"png unknown critical chunk ({tag})", png_with_chunk(b"ZZZZ", blob)
            yield f"jpeg APP1 exif ({tag})", jpeg_with_segment(0xE1, b"Exif\x00\x00" + blob)
            yield f"jpeg APP1 raw ({tag})", jpeg_with_segment(0xE1, blob)
            yield f"jpeg APP2 icc ({tag})", jpeg_with_segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + blob)
            yield f"jpeg APP1 xmp ({tag})", jpeg_with_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + blob)
            yield f"jpeg APP14 adobe ({tag})", jpeg_with_segment(0xEE, b"Adobe" + blob)
            yield f"webp exif ({tag})", pil_saved("WEBP", exif=blob)
            yield f"webp icc ({tag})", pil_saved("WEBP", icc_profile=blob)
            yield f"webp xmp ({tag})", pil_saved("WEBP", xmp=blob)
            yield f"png via pil exif ({tag})", pil_saved("PNG", exif=blob)
    info = PngImagePlugin.PngInfo()
    info.add_text("XML:com.adobe.xmp", "<x:xmpmeta>" * 50, zip=True)
    yield "png long xmp text", pil_saved("PNG", pnginfo=info)


def mutated(rng: random.Random, data: bytes, flips: int) -> bytes:
    """Random bytes of the file replaced (headers and metadata included)."""
    data = bytearray(data)
    for _ in range(flips):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def decode_outcome(data: bytes) -> str:
    try:
        image = decode_image(data)
    except InvalidRequest as exc:
        assert exc.field == "image"
        return "invalid"
    assert image.mode == "RGB" and image.width > 0 and image.height > 0
    return "ok"


def test_garbage_exif_chunk_still_serves_the_pixels():
    """The reproduced case: the pixels are fine, the EXIF block is not; the image is used as is."""
    image = decode_image(png_with_chunk(b"eXIf", GARBAGE))
    assert image.size == (24, 16) and image.getpixel((0, 0)) == (40, 90, 160)


def test_a_readable_exif_orientation_is_still_applied():
    assert decode_image(pil_saved("PNG", exif=exif_with_orientation(6))).size == (16, 24)


@pytest.mark.parametrize("seed", [1, 2])
def test_metadata_in_every_container_never_escapes_the_decode_guard(seed):
    rng = random.Random(seed)
    outcomes = {}
    for description, data in cases(rng):
        outcomes.setdefault(decode_outcome(data), []).append(description)
        for flips in (1, 4):  # the same file with random bytes replaced, metadata included
            outcomes.setdefault(decode_outcome(mutated(rng, data, flips)), []).append(f"{description}, mutated")
    total = sum(map(len, outcomes.values()))
    assert set(outcomes) <= {"ok", "invalid"}
    assert total > 1000 and len(outcomes.get("ok", [])) > total // 4  # most metadata damage leaves pixels usable
