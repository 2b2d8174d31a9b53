"""Pure logic of files, images and voice (skyeim/gateway/features/files.py,
skyeim/client/files.py): sniffing, the allowed-type rule, names, signed links,
the file message's content, the screen letting other content pass, and the storage's
choice (Files.Storage: local or s3://)."""
from __future__ import annotations

import io
import json
import time

import pytest
from PIL import Image

from skyeim.client.files import file_content, http_base, parse_file_content
from skyeim.config import ConfigError, FilesConfig
from skyeim.gateway.backends.files import LocalStorage, S3Storage, parse_s3_url, storage_for
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


def test_files_storage_is_local_or_an_s3_url_with_its_settings():
    def check(**files):
        FilesConfig(**files).validate("Files")

    check()
    check(storage="s3://skyeim-files")
    check(storage="s3://skyeim-files/chat/uploads", s3_endpoint="http://127.0.0.1:9000",
          s3_access_key="k", s3_secret_key="s")
    for bad, key in ((dict(storage="minio://b"), "Files.Storage"),
                     (dict(storage="s3://"), "Files.Storage"),
                     (dict(storage="s3://Bad_Bucket"), "Files.Storage"),
                     (dict(storage="s3://bucket", s3_endpoint="127.0.0.1:9000"), "Files.S3Endpoint"),
                     (dict(storage="s3://bucket", s3_access_key="k"), "Files.S3AccessKey"),
                     (dict(storage="s3://bucket", s3_timeout=0), "Files.S3Timeout"),
                     (dict(storage="s3://bucket", s3_retries=-1), "Files.S3Retries")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            check(**bad)
    assert "hush-hush" not in repr(FilesConfig(s3_access_key="hush-hush", s3_secret_key="hush-hush"))
    assert parse_s3_url("s3://b") == ("b", "")
    assert parse_s3_url("s3://b/chat/uploads/") == ("b", "chat/uploads/")


def test_the_storage_is_chosen_from_the_config_and_local_reads_ranges(tmp_path):
    assert isinstance(storage_for(FilesConfig(dir=str(tmp_path))), LocalStorage)
    s3 = storage_for(FilesConfig(dir=str(tmp_path), storage="s3://bucket/p",
                                 s3_endpoint="http://127.0.0.1:1", s3_region="us-east-1",
                                 s3_access_key="k", s3_secret_key="s", s3_timeout=2))
    assert isinstance(s3, S3Storage) and (s3.bucket, s3.prefix) == ("bucket", "p/")
    assert s3.client.meta.config.connect_timeout == 2 and s3.client.meta.config.read_timeout == 2
    local = LocalStorage(str(tmp_path))
    local.start()
    tmp, out = local.new_upload()
    with out:
        out.write(bytes(range(200)) * 1000)
    local.put(tmp, "f" * 24)
    assert local.stat("f" * 24).size == 200_000 and local.stat("g" * 24) is None
    assert b"".join(local.read("f" * 24, "", 10, 20)) == bytes(range(10, 20))
    assert b"".join(local.read("f" * 24)) == bytes(range(200)) * 1000
    local.remove("f" * 24)
    assert local.stat("f" * 24) is None
