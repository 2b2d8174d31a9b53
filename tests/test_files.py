"""Files, images and voice (docs/protocol.md "Files, images and voice"): POST
/api/files with types sniffed from the content, the size limit enforced while
streaming (nothing left on disk), images measured and thumbnailed, downloads
with Range, signed URLs that expire, and who may read a file: its uploader and
the members of a conversation that carried it. Against a live system
(standalone, a small Files.MaxSize and a short LinkTtl). tests/test_files_s3.py
runs these tests again with S3 storage."""
from __future__ import annotations

import json
import time
import urllib.parse

import pytest

from files_harness import (ELF, chunked_upload, file_message, image_size, jpeg_bytes, png_bytes,
                           stored_files, upload, wav_bytes)
from harness import new_msg_id, running_system

MAX_SIZE = 300_000
LINK_TTL = 4
FILES = {"MaxSize": MAX_SIZE, "LinkTtl": LINK_TTL}   # tests/test_files_s3.py's too
SKIP = ("pong", "group_unread", "online", "offline")


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("test_files")
    with running_system(tmp, ws={"Files": {"Dir": str(tmp / "files"), **FILES}}) as s:
        s.files_dir = tmp / "files"
        yield s


@pytest.fixture(scope="module")
def people(system):
    return system.users("f_ann", "f_bob", "f_cat", "f_dan")


def uploaded(system, user, data: bytes, name: str = "f.bin", **kw) -> dict:
    r = upload(system, user, data, name, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def fetch(system, user, file_id: str, suffix: str = "", **kw):
    return system.api("GET", f"/api/files/{file_id}{suffix}", user, **kw)


def send_file_chat(system, sender, to, answer: dict, content_type: int = 2, frame="chat",
                   **target) -> str:
    msg_id = new_msg_id()
    data = {"msgId": msg_id, "content": file_message(answer), "contentType": content_type}
    data.update(target or {"toUserId": to.id})
    client = system.connect(sender)
    client.send(frame, data)
    ack = client.expect_ack(msg_id, "sent", skip=SKIP)
    assert ack["seq"] >= 1
    client.close()
    return msg_id


# -- uploads ---------------------------------------------------------------------------------

def test_an_image_is_sniffed_measured_and_thumbnailed_whatever_its_name(system, people):
    ann = people[0]
    data = png_bytes(640, 480)
    answer = uploaded(system, ann, data, "holiday.txt", part_type="text/plain")
    assert (answer["mime"], answer["size"], answer["width"], answer["height"]) == \
        ("image/png", len(data), 640, 480)
    assert answer["name"] == "holiday.txt" and len(answer["fileId"]) >= 16
    r = fetch(system, ann, answer["fileId"])
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Type"] == "image/png"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    thumb = system.session.get(system.url + answer["thumbnailUrl"], timeout=10)
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] in ("image/png", "image/jpeg")
    assert image_size(thumb.content) == (256, 192)

    jpeg = uploaded(system, ann, jpeg_bytes(1200, 300), "photo")
    assert (jpeg["mime"], jpeg["width"], jpeg["height"]) == ("image/jpeg", 1200, 300)
    assert image_size(fetch(system, ann, jpeg["fileId"], "/thumbnail").content) == (256, 64)


def test_a_text_file_named_like_an_image_is_text_and_downloads_as_an_attachment(system, people):
    ann = people[0]
    data = "päivää, a plain note\n".encode() * 50
    answer = uploaded(system, ann, data, "not-really.png", part_type="image/png")
    assert answer["mime"] == "text/plain" and "width" not in answer and "thumbnailUrl" not in answer
    r = fetch(system, ann, answer["fileId"])
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Type"].startswith("text/plain")
    assert r.headers["Content-Disposition"].startswith("attachment") and \
        "not-really.png" in r.headers["Content-Disposition"]
    assert fetch(system, ann, answer["fileId"], "/thumbnail").status_code == 404


def test_a_voice_note_is_audio_and_is_sent_as_contenttype_4(system):
    ann, bob = system.users("f_vox_a", "f_vox_b")   # its receipts reach no other test's client
    data = wav_bytes()
    answer = uploaded(system, ann, data, "note.wav", part_type="application/octet-stream")
    assert answer["mime"].startswith("audio/") and answer["size"] == len(data)
    assert "width" not in answer and "thumbnailUrl" not in answer
    send_file_chat(system, ann, bob, answer, content_type=4)
    r = fetch(system, bob, answer["fileId"])
    assert r.status_code == 200 and r.content == data
    assert r.headers["Content-Type"] == answer["mime"]


def test_a_type_not_allowed_is_refused_with_415_and_nothing_kept(system, people):
    before = stored_files(system)
    r = upload(system, people[0], ELF, "harmless.png", part_type="image/png")
    assert r.status_code == 415 and r.json()["code"] == "unsupported_type", r.text
    assert "application/x-executable" in r.json()["message"]
    r = upload(system, people[0], b"\x00\x01\x02" * 100, "blob.txt")    # nothing matches
    assert r.status_code == 415 and r.json()["code"] == "unsupported_type"
    assert stored_files(system) == before


def test_an_upload_needs_a_token_and_a_multipart_body(system, people):
    assert upload(system, None, png_bytes(8, 8)).status_code == 401
    r = system.api("POST", "/api/files", people[0], data=b"raw", headers={"Content-Type": "image/png"})
    assert r.status_code == 415
    r = system.api("POST", "/api/files", people[0], files={"other": ("x", b"hello")})
    assert r.status_code == 400 and "file" in r.json()["message"]


def test_an_oversized_upload_stops_at_the_limit_with_nothing_on_disk(system, people):
    ann = people[0]
    before = stored_files(system)
    # a declared length far above the limit: refused before the body is read
    r = upload(system, ann, b"a" * (MAX_SIZE + 100_000), "big.txt")
    assert r.status_code == 413 and r.json()["code"] == "too_large", r.text
    # a chunked body (no length): refused when the file part passes the limit
    status, answer, dropped_after = chunked_upload(system, ann.token, total=20 * MAX_SIZE)
    assert status == 413, answer[:300]
    assert b"too_large" in answer and b"Connection: close" in answer
    # the rest of the body is not read to its end: the gateway drops the connection
    # (after at most 1 MiB more; the rest here is socket buffers)
    assert dropped_after is not None, "the gateway read 64 MiB more of a refused body"
    assert stored_files(system) == before
    # exactly at the limit is fine
    assert uploaded(system, ann, b"b" * MAX_SIZE, "exact.txt")["size"] == MAX_SIZE
    assert system.api("GET", "/healthz").status_code == 200


# -- downloads ---------------------------------------------------------------------------------

def test_ranges_are_served_with_206_and_416(system, people):
    ann = people[0]
    data = bytes(range(256)) * 40
    data = b"%PDF-1.4\n" + data
    answer = uploaded(system, ann, data, "doc.pdf")
    assert answer["mime"] == "application/pdf"
    fid = answer["fileId"]
    r = fetch(system, ann, fid, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = fetch(system, ann, fid, headers={"Range": f"bytes={len(data) - 5}-"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = fetch(system, ann, fid, headers={"Range": f"bytes={len(data) + 10}-{len(data) + 20}"})
    assert r.status_code == 416
    assert r.headers["Content-Range"] == f"bytes */{len(data)}"
    r = fetch(system, ann, fid)
    assert r.status_code == 200 and r.headers["Accept-Ranges"] == "bytes" and r.content == data
    assert r.headers["Content-Disposition"].startswith("attachment")


def test_only_the_uploader_and_the_conversations_members_may_read(system, people):
    ann, bob, cat, dan = people
    answer = uploaded(system, ann, png_bytes(32, 32), "secret.png")
    fid = answer["fileId"]
    for outsider in (bob, cat):
        r = fetch(system, outsider, fid)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
        assert system.api("GET", f"/api/files/{fid}/link", outsider).status_code == 404
    assert fetch(system, None, fid).status_code == 401

    # ann sends it to bob: bob may read it, cat may not
    bob_client = system.connect(bob)
    send_file_chat(system, ann, bob, answer)
    chat = bob_client.expect("chat", skip=SKIP)
    assert chat["contentType"] == 2
    content = json.loads(chat["content"])       # the gateway's facts, not the sender's
    assert content == {"fileId": fid, "name": "secret.png", "size": answer["size"],
                       "mime": "image/png", "width": 32, "height": 32}
    bob_client.close()
    assert fetch(system, bob, fid).status_code == 200
    assert fetch(system, cat, fid).status_code == 404

    # cat cannot send a file she may not read (whatever she knows of its id)
    cat_client = system.connect(cat)
    msg_id = new_msg_id()
    cat_client.send("chat", {"toUserId": dan.id, "msgId": msg_id, "contentType": 3,
                             "content": file_message(answer)})
    err = cat_client.expect_error("forbidden", msg_id=msg_id, skip=SKIP)
    assert "file" in err["message"]
    cat_client.close()
    assert fetch(system, dan, fid).status_code == 404

    # bob forwards it to dan: dan may read it now
    send_file_chat(system, bob, dan, answer, content_type=3)
    assert fetch(system, dan, fid).status_code == 200

    # a group: ann sends another file to a group with cat; cat reads, bob (outside) does not
    other = uploaded(system, ann, jpeg_bytes(64, 48), "team.jpg")
    gid = system.api("POST", "/api/groups", ann, json_body={"name": "files",
                                                            "memberIds": [cat.id]}).json()["groupId"]
    send_file_chat(system, ann, None, other, frame="groupchat", groupId=gid)
    assert fetch(system, cat, other["fileId"]).status_code == 200
    assert fetch(system, cat, other["fileId"], "/thumbnail").status_code == 200
    assert fetch(system, bob, other["fileId"]).status_code == 404
    # and content that is not a file reference passes as before (a v1 client's URL)
    plain = system.connect(ann)
    msg_id = new_msg_id()
    plain.send("chat", {"toUserId": bob.id, "msgId": msg_id, "contentType": 2,
                        "content": "https://example.com/cat.png"})
    plain.expect_ack(msg_id, "sent", skip=SKIP)
    plain.close()


def test_a_signed_url_works_without_a_token_until_it_expires(system, people):
    ann, bob = people[0], people[1]
    answer = uploaded(system, ann, png_bytes(20, 10), "link.png")
    fid = answer["fileId"]
    url = system.url + answer["url"]
    r = system.session.get(url, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    # a link for the file is not a link for its thumbnail, nor for another file
    parts = urllib.parse.urlsplit(answer["url"])
    query = dict(urllib.parse.parse_qsl(parts.query))
    assert system.session.get(f"{system.url}/api/files/{fid}/thumbnail?{parts.query}",
                              timeout=10).status_code == 403
    forged = f"{system.url}/api/files/{fid}?expires={int(query['expires']) + 3600}&sig={query['sig']}"
    assert system.session.get(forged, timeout=10).status_code == 403
    # /link gives a reader fresh links; bob is no reader
    assert system.api("GET", f"/api/files/{fid}/link", bob).status_code == 404
    fresh = system.api("GET", f"/api/files/{fid}/link", ann).json()
    assert fresh["fileId"] == fid and fresh["expiresAt"] >= int(query["expires"])
    # after LinkTtl the link is refused
    time.sleep(max(0.0, int(query["expires"]) - time.time()) + 1.5)
    r = system.session.get(url, timeout=10)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
