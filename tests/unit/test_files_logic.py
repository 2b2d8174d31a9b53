"""Pure logic of files, images and voice (skyeim/gateway/features/files.py,
skyeim/client/files.py): sniffing, the allowed-type rule, names, signed links,
the file message's content, and the screen letting other content pass."""
from __future__ import annotations

import io
import json
import time

from PIL import Image

from skyeim.client.files import file_content, http_base, parse_file_content
from skyeim.gateway.features.files import clean_name, image_facts
from skyeim.gateway.features.files import file_content as server_file_content
from skyeim.gateway.features.files import sniff, type_allowed


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, "PNG")
    return out.getvalue()


def test_sniffing_reads_the_content_not_the_name():
    assert sniff(_png()) == "image/png"
    assert sniff(b"%PDF-1.7\n...") == "application/pdf"
    assert sniff(b"\x7fELF\x02\x01\x01" + b"\x00" * 100) == "application/x-executable"
    assert sniff("hyvää päivää\n".encode()) == "text/plain"
    assert sniff("ä".encode() * 10 + "ä".encode()[:1]) == "text/plain"   # cut mid-character
    assert sniff(b"text with a NUL \x00 byte") is None
    assert sniff(b"\xff\xfe\xfa not utf-8 " * 4) is None
    assert sniff(b"") is None


def test_allowed_types_take_exact_types_and_families():
    allowed = ("image/png", "audio/*")
    assert type_allowed("image/png", allowed) and type_allowed("audio/ogg", allowed)
    assert not type_allowed("image/jpeg", allowed)
    assert not type_allowed("application/x-executable", allowed)


def test_names_lose_paths_and_control_characters():
    assert clean_name("C:\\Users\\me\\cat.png") == "cat.png"
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("a\x00b\nc.txt") == "abc.txt"
    assert clean_name("") == clean_name(None) == "file"
    assert len(clean_name("x" * 1000)) == 255


def test_signed_links_name_one_file_one_variant_until_they_expire(gateway):
    files = gateway.files
    fid, expires = "A" * 24, int(time.time()) + 60
    url = files.signed_url(fid, "", expires)
    sig = url.split("sig=")[1]
    assert files.link_valid(fid, "", str(expires), sig)
    assert not files.link_valid(fid, "thumb", str(expires), sig)
    assert not files.link_valid("B" * 24, "", str(expires), sig)
    assert not files.link_valid(fid, "", str(expires + 1), sig)
    assert not files.link_valid(fid, "", str(int(time.time()) - 1),
                                files.signed_url(fid, "", int(time.time()) - 1).split("sig=")[1])
    assert not files.link_valid(fid, "", "soon", sig) and not files.link_valid(fid, "", None, sig)


def test_the_screen_passes_chats_that_carry_no_file(gateway):
    drafts = [{"fromUserId": 1, "toUserId": 2, "msgId": "m1", "content": "hello", "contentType": 1},
              {"fromUserId": 1, "toUserId": 2, "msgId": "m2", "content": "https://x/y.png",
               "contentType": 2},
              {"fromUserId": 1, "toUserId": 2, "msgId": "m3", "content": '{"url": "x"}',
               "contentType": 3}]
    assert gateway.files.screen(drafts, ["m1", "m2", "m3"]) == drafts
    bad = {**drafts[0], "content": '{"fileId": "../x"}', "contentType": 2}
    [verdict] = gateway.files.screen([bad], ["m4"])
    assert verdict.code == "bad_request" and verdict.msg_id == "m4"


def test_the_sdk_writes_and_reads_the_content_format():
    upload = {"fileId": "f" * 24, "name": "a.png", "size": 10, "mime": "image/png",
              "width": 3, "height": 2, "url": "/api/files/x"}
    content = file_content(upload, durationMs=1200)
    assert json.loads(content) == {"fileId": "f" * 24, "name": "a.png", "size": 10,
                                   "mime": "image/png", "width": 3, "height": 2, "durationMs": 1200}
    assert parse_file_content(content)["fileId"] == "f" * 24
    assert server_file_content(content)["name"] == "a.png"
    assert parse_file_content("plain text") is None and server_file_content("{nope") is None
    assert http_base("ws://h:1/ws") == "http://h:1" and http_base("https://h") == "https://h"


def test_a_turned_photo_reports_its_shown_size_and_gets_an_upright_thumbnail(tmp_path):

    im = Image.new("RGB", (400, 100), (255, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6                      # EXIF: turn 90 degrees to show
    im.save(tmp_path / "photo.jpg", "JPEG", exif=exif)
    assert image_facts(tmp_path / "photo.jpg", tmp_path / "t", 256, 10**9) == (100, 400, "image/jpeg")
    with Image.open(tmp_path / "t") as thumb:
        assert thumb.size == (64, 256)
    assert image_facts(tmp_path / "photo.jpg", tmp_path / "t2", 256, 1000) == (100, 400, None)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    assert image_facts(tmp_path / "broken.png", tmp_path / "t3", 256, 10**9) is None
