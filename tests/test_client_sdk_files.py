"""The SDK and CLI side of files, images and voice (docs/protocol.md "Files, images and
voice"): Client.upload_file / send_image / send_file, Api.download_file / file_link,
the file message's content as the recipient sees it, and `send-file` on the command line."""
from __future__ import annotations

import json

import pytest

from files_harness import ELF, image_size, png_bytes
from harness import running_system
from sdk_harness import cli, next_of, ok
from skyeim.client import Api, ApiError, ChatMessage, GroupMessage
from skyeim.client.files import parse_file_content


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("test_client_sdk_files")
    with running_system(tmp, ws={"Files": {"Dir": str(tmp / "files")}}) as s:
        yield s


def test_send_image_reaches_the_recipient_who_downloads_it(system, clients):
    ann, bob = system.users("sf_ann", "sf_bob")
    ca, cb = clients(system.url, ann.token), clients(system.url, bob.token)
    data = png_bytes(300, 200)
    result, upload = ca.send_image(bob.id, data, name="cat.png")
    assert result.status == "sent" and result.seq == 1
    assert (upload["mime"], upload["width"], upload["height"]) == ("image/png", 300, 200)
    m = next_of(cb, ChatMessage)
    assert m.content_type == 2 and m.msg_id == result.msg_id
    content = parse_file_content(m.content)
    assert content == {"fileId": upload["fileId"], "name": "cat.png", "size": len(data),
                       "mime": "image/png", "width": 300, "height": 200}
    bob_api = Api(system.url, bob.token)
    assert bob_api.download_file(content["fileId"]) == data
    assert image_size(bob_api.download_file(content["fileId"], thumbnail=True)) == (256, 171)
    assert bob_api.download_file(content["fileId"], byte_range=(1, 3)) == data[1:4]
    link = bob_api.file_link(content["fileId"])
    assert link["url"].startswith(f"/api/files/{content['fileId']}?expires=")
    outsider = Api(system.url, system.register_user("sf_out").token)
    with pytest.raises(ApiError) as e:
        outsider.download_file(content["fileId"])
    assert e.value.status == 404


def test_upload_file_from_a_path_and_send_file_to_a_group(system, clients, tmp_path):
    ann, bob = system.users("sf2_ann", "sf2_bob")
    gid = Api(system.url, ann.token).create_group("files", [bob.id])
    path = tmp_path / "notes.txt"
    path.write_text("meeting at noon\n")
    ca, cb = clients(system.url, ann.token), clients(system.url, bob.token)
    uploaded = ca.upload_file(path)
    assert (uploaded["name"], uploaded["mime"], uploaded["size"]) == ("notes.txt", "text/plain", 16)
    result, upload = ca.send_file(None, path, group_id=gid)
    assert result.status == "sent"
    m = next_of(cb, GroupMessage)
    assert m.content_type == 3 and json.loads(m.content)["fileId"] == upload["fileId"]
    assert Api(system.url, bob.token).download_file(upload["fileId"]) == b"meeting at noon\n"
    with pytest.raises(ApiError) as e:
        ca.upload_file(ELF, name="tool")
    assert (e.value.status, e.value.code) == (415, "unsupported_type")


def test_the_cli_sends_a_file(system, clients, tmp_path):
    ann, bob = system.users("sf3_ann", "sf3_bob")
    cb = clients(system.url, bob.token)
    image = tmp_path / "pic.png"
    image.write_bytes(png_bytes(64, 40))
    out = ok(cli(system, tmp_path, "--token", ann.token, "send-file", str(bob.id), str(image),
                 "--image"))
    assert out.startswith("sent ") and "image/png" in out and "64x40" in out
    m = next_of(cb, ChatMessage)
    assert m.content_type == 2 and parse_file_content(m.content)["name"] == "pic.png"
    p = cli(system, tmp_path, "--token", ann.token, "send-file", str(bob.id), str(tmp_path / "nope"))
    assert p.returncode == 1 and "no such file" in p.stderr
