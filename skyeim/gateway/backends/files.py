"""Files as the gateway sees them (docs/protocol.md "Files, images and voice"):
their records and grants in the Message service (/v1/files), their bytes in a
Storage: LocalStorage (Files.Dir; every node of a cluster must see the same one)
or S3Storage (Files.Storage: s3://BUCKET[/PREFIX], any S3-compatible service).

An upload is first written to a temporary file in Files.Dir/tmp (each node's own
with S3), the size limit enforced while it streams in; only a finished,
accepted file is put into the storage. So an S3 upload never holds more than
one part (S3_PART_SIZE) in memory, and a refused one never reaches the bucket.
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol
from urllib.parse import urlsplit

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from skyeim.config import FilesConfig
from skyeim.gateway.backends.clients import BackendRejected, MessageService

log = logging.getLogger(__name__)

THUMBNAIL = "thumb"       # the variant of an image's thumbnail
STALE_UPLOAD_SECONDS = 3600   # a temporary upload file this old was left by a crash
READ_CHUNK = 64 * 1024    # bytes per chunk of a download
S3_PART_SIZE = 8 << 20    # multipart above this; one part in memory at a time
_MISSING = ("404", "NoSuchKey", "NotFound")


class FileRecords:
    """/v1/files of the Message service."""

    def __init__(self, message: MessageService):
        self.message = message

    def create(self, record: dict) -> dict:
        return self.message.call("POST", "/v1/files", json=record)

    def access(self, file_id: str, user_id: int | None) -> dict | None:
        """The record with {granted, groupIds} for ``user_id``; None for an unknown file."""
        params = {"userId": user_id} if user_id is not None else None
        try:
            return self.message.call("GET", f"/v1/files/{file_id}", params=params)
        except BackendRejected as e:
            if e.status in (400, 404):
                return None
            raise

    def grant_users(self, file_id: str, user_ids: list[int]) -> bool:
        return self._grant(file_id, {"userIds": user_ids})

    def grant_group(self, file_id: str, group_id: int) -> bool:
        return self._grant(file_id, {"groupId": group_id})

    def _grant(self, file_id: str, body: dict) -> bool:
        try:
            self.message.call("POST", f"/v1/files/{file_id}/grants", json=body)
            return True
        except BackendRejected as e:
            if e.status in (400, 404):
                return False
            raise


class StorageUnavailable(Exception):
    """The storage cannot be used now (an S3 endpoint unreachable, a bucket gone);
    the message is one line for the log and the client."""


@dataclass(frozen=True)
class Blob:
    size: int
    modified: float       # s since the epoch


class Storage(Protocol):
    """What the files feature and the download route need of a storage; raises
    StorageUnavailable when it cannot answer."""

    def start(self) -> None: ...

    def new_upload(self) -> tuple[Path, BinaryIO]: ...

    def put(self, tmp: Path, file_id: str, variant: str = "") -> None: ...

    def stat(self, file_id: str, variant: str = "") -> Blob | None: ...

    def read(self, file_id: str, variant: str = "", start: int = 0,
             end: int | None = None) -> Iterator[bytes]: ...

    def remove(self, file_id: str) -> None: ...


def storage_for(cfg: FilesConfig) -> Storage:
    """The storage Files.Storage names (validated by FilesConfig)."""
    if cfg.storage == "local":
        return LocalStorage(cfg.dir)
    return S3Storage(cfg)


class _Scratch:
    """Files.Dir/tmp: uploads in progress."""

    def __init__(self, directory: str):
        self.root = Path(directory)
        self.tmp = self.root / "tmp"

    def _clean_scratch(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        # what a crash left half-written (never a finished file); only old ones, since
        # the nodes of a cluster may share the directory and another may be mid-upload
        cutoff = time.time() - STALE_UPLOAD_SECONDS
        for stale in self.tmp.iterdir():
            try:
                if stale.stat().st_mtime < cutoff:
                    stale.unlink(missing_ok=True)
            except OSError:
                pass

    def new_upload(self) -> tuple[Path, BinaryIO]:
        """A fresh temporary file (path, binary file object) for an upload's bytes."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        path = self.tmp / f"up-{secrets.token_hex(12)}"
        return path, open(path, "xb")


class LocalStorage(_Scratch):
    """Files.Dir: <dir>/<2 chars of the id>/<id>[.thumb]; uploads in progress in <dir>/tmp."""

    def start(self) -> None:
        self._clean_scratch()

    def path(self, file_id: str, variant: str = "") -> Path:
        return self.root / file_id[:2] / (file_id + (f".{variant}" if variant else ""))

    def put(self, tmp: Path, file_id: str, variant: str = "") -> None:
        """Move a finished temporary file into place (atomic within one file system)."""
        dest = self.path(file_id, variant)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)

    def stat(self, file_id: str, variant: str = "") -> Blob | None:
        try:
            st = self.path(file_id, variant).stat()
        except FileNotFoundError:
            return None
        return Blob(st.st_size, st.st_mtime)

    def read(self, file_id: str, variant: str = "", start: int = 0,
             end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end) in chunks. Opened here, so a missing file fails now."""
        f = open(self.path(file_id, variant), "rb")
        return _chunks(f, start, end)

    def remove(self, file_id: str) -> None:
        for variant in ("", THUMBNAIL):
            self.path(file_id, variant).unlink(missing_ok=True)


def _chunks(f: BinaryIO, start: int, end: int | None) -> Iterator[bytes]:
    try:
        f.seek(start)
        left = end - start if end is not None else None
        while left is None or left > 0:      # bounded: the file's or the range's length
            chunk = f.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
            if not chunk:
                break
            if left is not None:
                left -= len(chunk)
            yield chunk
    finally:
        f.close()


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://BUCKET[/PREFIX] -> (bucket, prefix ending in / or "")."""
    parts = urlsplit(url)
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


class S3Storage(_Scratch):
    """Files.Storage s3://BUCKET[/PREFIX]: objects PREFIX/<id>[.thumb] (boto3, so AWS,
    MinIO, Ceph RGW alike). Every call has Files.S3Timeout as its connect and read
    timeout and at most Files.S3Retries retries."""

    def __init__(self, cfg: FilesConfig):
        super().__init__(cfg.dir)
        self.bucket, self.prefix = parse_s3_url(cfg.storage)
        self.endpoint = cfg.s3_endpoint or "AWS S3"
        boto = BotoConfig(connect_timeout=cfg.s3_timeout, read_timeout=cfg.s3_timeout,
                          retries={"mode": "standard", "total_max_attempts": cfg.s3_retries + 1},
                          # an own endpoint (MinIO, Ceph) rarely has a DNS name per bucket
                          s3={"addressing_style": "path" if cfg.s3_endpoint else "auto"})
        # empty keys: boto3's own chain (AWS_ACCESS_KEY_ID..., ~/.aws, an instance role)
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=cfg.s3_endpoint or None, region_name=cfg.s3_region or None,
            aws_access_key_id=cfg.s3_access_key or None,
            aws_secret_access_key=cfg.s3_secret_key or None, config=boto)
        # threads off: the upload runs in the request's greenlet, one part at a time
        self.transfer = TransferConfig(multipart_threshold=S3_PART_SIZE,
                                       multipart_chunksize=S3_PART_SIZE, use_threads=False)

    def _key(self, file_id: str, variant: str = "") -> str:
        return f"{self.prefix}{file_id}" + (f".{variant}" if variant else "")

    def _unavailable(self, doing: str, e: Exception) -> StorageUnavailable:
        if isinstance(e, ClientError):
            err = e.response.get("Error", {})
            why = f"{err.get('Code', '?')}: {err.get('Message') or 'no message'}"
        else:
            why = str(e) or type(e).__name__
        return StorageUnavailable(
            f"S3 storage s3://{self.bucket}/{self.prefix} at {self.endpoint}: {doing} failed ({why})")

    def start(self) -> None:
        """Check that the bucket is there and reachable: a clear error at start."""
        self._clean_scratch()
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StorageUnavailable(
                    f"Files.Storage: the bucket {self.bucket!r} does not exist at {self.endpoint}") from None
            raise self._unavailable("checking the bucket", e) from None
        except BotoCoreError as e:
            raise self._unavailable("reaching the bucket", e) from None

    def put(self, tmp: Path, file_id: str, variant: str = "") -> None:
        """Upload a finished temporary file (multipart above S3_PART_SIZE), then remove it."""
        try:
            self.client.upload_file(str(tmp), self.bucket, self._key(file_id, variant),
                                    Config=self.transfer)
        except (ClientError, BotoCoreError, S3UploadFailedError) as e:
            raise self._unavailable("storing an upload", e) from None
        tmp.unlink(missing_ok=True)

    def stat(self, file_id: str, variant: str = "") -> Blob | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(file_id, variant))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise self._unavailable("reading a file's size", e) from None
        except BotoCoreError as e:
            raise self._unavailable("reading a file's size", e) from None
        return Blob(int(head["ContentLength"]), head["LastModified"].timestamp())

    def read(self, file_id: str, variant: str = "", start: int = 0,
             end: int | None = None) -> Iterator[bytes]:
        """Bytes [start, end): one GET with that Range, made here (so its failure is
        StorageUnavailable before an answer starts), streamed in chunks."""
        ranged = {}
        if start or end is not None:
            ranged["Range"] = f"bytes={start}-" + (f"{end - 1}" if end is not None else "")
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self._key(file_id, variant),
                                         **ranged)
        except (ClientError, BotoCoreError) as e:
            raise self._unavailable("reading a file", e) from None
        return _s3_chunks(got["Body"], f"s3://{self.bucket}/{self._key(file_id, variant)}")

    def remove(self, file_id: str) -> None:
        for variant in ("", THUMBNAIL):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=self._key(file_id, variant))
            except (ClientError, BotoCoreError) as e:
                log.warning("%s", self._unavailable("removing an unrecorded upload", e))


def _s3_chunks(body, where: str) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(READ_CHUNK)      # bounded: the object's length
    except (BotoCoreError, OSError) as e:
        # the answer has begun: it can only be cut short. One line here; ECONNRESET is
        # what gevent's server takes as a client gone (it closes the connection quietly)
        log.warning("a download from %s broke off: %s", where, e)
        raise ConnectionResetError(errno.ECONNRESET, "the S3 download broke off") from None
    finally:
        body.close()          # a client gone mid-download: the S3 connection is let go
