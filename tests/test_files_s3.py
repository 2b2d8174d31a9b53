"""Files stored to S3-compatible storage (Files.Storage s3://BUCKET/PREFIX; docs/protocol.md
"Files, images and voice") against a real S3 server process (moto's server mode,
tests/support/s3_harness.py): the key paths of tests/test_files.py run again here
(imported, with this module's ``system``), and tests/test_files_cluster.py's with two
gateway nodes sharing the bucket; then what only S3 has: the objects' keys, a missing
bucket or an unreachable endpoint at start (one line, exit 1), a bucket gone while
running (503, one log line)."""
from __future__ import annotations

import pytest

from cluster_harness import running_cluster
from skyeim import config
from skyeim.gateway.backends.files import S3_PART_SIZE, storage_for
from files_harness import png_bytes, stored_files, upload
from harness import free_port, running_system
from s3_harness import running_moto
from test_files import (FILES, people,  # noqa: F401  (fixture and tests run here again)
                        test_a_signed_url_works_without_a_token_until_it_expires,
                        test_a_text_file_named_like_an_image_is_text_and_downloads_as_an_attachment,
                        test_a_type_not_allowed_is_refused_with_415_and_nothing_kept,
                        test_a_voice_note_is_audio_and_is_sent_as_contenttype_4,
                        test_an_image_is_sniffed_measured_and_thumbnailed_whatever_its_name,
                        test_an_oversized_upload_stops_at_the_limit_with_nothing_on_disk,
                        test_only_the_uploader_and_the_conversations_members_may_read,
                        test_ranges_are_served_with_206_and_416, uploaded)
from test_files_cluster import test_a_file_uploaded_on_one_node_is_read_on_another  # noqa: F401

PREFIX = "chat/uploads"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    with running_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture(scope="module")
def system(tmp_path_factory, moto):
    tmp = tmp_path_factory.mktemp("test_files_s3")
    bucket = moto.make_bucket("skyeim-files")
    files = moto.files_config(bucket, PREFIX, Dir=str(tmp / "scratch"), **FILES)
    with running_system(tmp, ws={"Files": files}) as s:
        s.files_dir, s.s3 = tmp / "scratch", (moto, bucket)
        yield s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, moto):
    tmp = tmp_path_factory.mktemp("files_s3_cluster")
    bucket = moto.make_bucket("skyeim-cluster")
    # with S3 the nodes share the bucket; Files.Dir holds only uploads in progress
    files = moto.files_config(bucket, Dir=str(tmp / "scratch"))
    with running_cluster(tmp, "files_s3_cluster", nodes=2, ws={"Files": files}) as c:
        c.s3 = (moto, bucket)
        yield c


def test_the_bytes_are_objects_under_the_prefix_and_nothing_stays_in_the_scratch_dir(system, people):
    ann = people[0]
    answer = uploaded(system, ann, png_bytes(300, 200), "bucket.png")
    fid = answer["fileId"]
    moto, bucket = system.s3
    keys = moto.keys(bucket)
    assert f"{PREFIX}/{fid}" in keys and f"{PREFIX}/{fid}.thumb" in keys
    head = moto.client.head_object(Bucket=bucket, Key=f"{PREFIX}/{fid}")
    assert head["ContentLength"] == answer["size"]
    r = system.session.head(system.url + answer["url"], timeout=10)     # headers, no bytes
    assert r.status_code == 200 and r.headers["Content-Length"] == str(answer["size"])
    assert not [p for p in stored_files(system) if not p.startswith("s3://")]


def test_a_range_of_a_file_uploaded_on_one_node_is_read_on_the_other(cluster):
    n1, n2 = cluster[1], cluster[2]
    ann = cluster.users("fs_ann")[0]
    data = b"%PDF-1.4\n" + bytes(range(256)) * 64
    r = n1.api("POST", "/api/files", ann, files={"file": ("doc.pdf", data, "application/pdf")})
    assert r.status_code == 200, r.text
    fid = r.json()["fileId"]
    r = n2.api("GET", f"/api/files/{fid}", ann, headers={"Range": "bytes=100-1099"})
    assert r.status_code == 206 and r.content == data[100:1100]
    assert r.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"


def test_a_large_file_goes_as_multipart_and_comes_back_in_ranges(moto, tmp_path):
    """S3Storage itself against the server: a file above the multipart threshold (three
    parts), its size, ranges across a part boundary, removal."""
    bucket = moto.make_bucket("skyeim-multipart")
    cfg = config.from_mapping(config.FilesConfig, moto.files_config(bucket, "big",
                                                                    Dir=str(tmp_path)))
    cfg.validate("Files")
    storage = storage_for(cfg)
    storage.start()
    tmp, out = storage.new_upload()
    block = bytes(range(256)) * 4096                   # 1 MiB
    with out:
        for _ in range(2 * S3_PART_SIZE // len(block) + 1):
            out.write(block)
    size = tmp.stat().st_size
    storage.put(tmp, "m" * 24)
    assert not tmp.exists() and moto.keys(bucket) == ["big/" + "m" * 24]
    parts = moto.client.head_object(Bucket=bucket, Key="big/" + "m" * 24)["ETag"]
    assert parts.endswith('-3"'), parts                # a multipart upload's ETag: 3 parts
    assert storage.stat("m" * 24).size == size and storage.stat("n" * 24) is None
    edge = S3_PART_SIZE
    got = b"".join(storage.read("m" * 24, "", edge - 10, edge + 10))
    assert got == bytes(block[i % len(block)] for i in range(edge - 10, edge + 10))
    assert b"".join(storage.read("m" * 24, "", size - 3)) == block[-3:]
    storage.remove("m" * 24)
    assert moto.keys(bucket) == []


def _one_line_refusal(system, *words: str) -> str:
    with pytest.raises(RuntimeError, match="exited with 1"):
        system.start(timeout=30)
    log = system.log_text()
    assert "Traceback" not in log, log
    lines = [line for line in log.splitlines() if all(w in line for w in words)]
    assert len(lines) == 1, log
    return lines[0]


def test_a_missing_bucket_stops_the_gateway_at_start_with_one_line(system_factory, moto, tmp_path):
    s = system_factory(start=False, ws={"Files": moto.files_config(
        "no-such-bucket", Dir=str(tmp_path / "scratch"))})
    line = _one_line_refusal(s, "no-such-bucket")
    assert "does not exist" in line and moto.endpoint in line


def test_an_unreachable_endpoint_stops_the_gateway_at_start_with_one_line(system_factory, moto,
                                                                         tmp_path):
    files = moto.files_config("skyeim-files", Dir=str(tmp_path / "scratch"), S3Timeout=1,
                              S3Retries=0)
    files["S3Endpoint"] = f"http://127.0.0.1:{free_port()}"          # nothing listens there
    s = system_factory(start=False, ws={"Files": files})
    line = _one_line_refusal(s, "S3 storage")
    assert files["S3Endpoint"] in line and "failed" in line


def test_a_bucket_gone_or_an_endpoint_down_while_running_is_503_with_one_log_line(tmp_path):
    with running_moto(tmp_path / "own-moto") as own:       # stopped in the test
        bucket = own.make_bucket("skyeim-going")
        files = own.files_config(bucket, Dir=str(tmp_path / "scratch"), S3Timeout=2, S3Retries=0)
        with running_system(tmp_path, ws={"Files": files}) as s:
            ann = s.users("fs_gone")[0]
            kept = uploaded(s, ann, png_bytes(40, 40), "before.png")
            for key in own.keys(bucket):
                own.client.delete_object(Bucket=bucket, Key=key)
            own.client.delete_bucket(Bucket=bucket)
            r = upload(s, ann, png_bytes(40, 40), "after.png")
            assert r.status_code == 503 and r.json()["code"] == "unavailable", r.text
            own.stop()
            r = s.api("GET", f"/api/files/{kept['fileId']}", ann)
            assert r.status_code == 503 and r.json()["code"] == "unavailable", r.text
            assert s.api("GET", "/healthz").status_code == 200
            log = s.log_text().splitlines()
            assert not [x for x in log if "Traceback" in x], log
            stored = [x for x in log if "upload not stored" in x]
            assert len(stored) == 1 and "NoSuchBucket" in stored[0], log
            assert len([x for x in log if "not served" in x]) == 1, log
