import base64
import struct

from kontext_bench.input_data import make_input_data, serialize_bytes_elements


def test_bytes_elements_carry_little_endian_length_prefixes():
    raw = base64.b64decode(serialize_bytes_elements([b"ab", b"", b"xyz"]))
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + struct.pack("<I", 3) + b"xyz"


def test_entries_hold_every_field_with_shapes_and_text_to_image_omits_image():
    data = make_input_data([b"\x89PNG", None], ["one", "two"], 512, 256, steps=8, seed=10)
    edit, text = data["data"]
    assert set(edit) == {"prompt", "image", "width", "height", "steps", "seed"}
    assert "image" not in text
    assert edit["width"] == {"content": [512], "shape": [1]} and text["seed"]["content"] == [11]
    assert base64.b64decode(edit["image"]["b64"])[4:] == b"\x89PNG"
