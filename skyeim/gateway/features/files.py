"""Files, images and voice (docs/protocol.md "Files, images and voice").

- ``upload``: POST /api/files streams one multipart file part to a temporary
  file, stopping at Files.MaxSize (413, the temporary file removed); its type
  is sniffed from the content (``filetype``; UTF-8 text without NUL is
  text/plain), never taken from the name or the part's Content-Type, and must
  be in Files.AllowedTypes (else 415); an image gets width/height and a
  thumbnail (Pillow, in a worker thread). The record goes to the Message
  service, the bytes to the storage (local or S3: a Storage; this module does
  not know which), 503 when the storage cannot take them.
- ``screen``: a ChatScreen. A chat or groupchat of contentType 2, 3 or 4 whose
  content is a JSON object with a ``fileId`` may carry it only when its sender
  may read the file (the uploader, or a member of a conversation it was sent
  in: forwarding); the conversation is granted the file *before* the chat is
  stored, and the content's size/mime/width/height are set from the record.
  Other content (a v1 client's URL, say) passes unchanged.
- ``readable``: who may download: the uploader, the users of a 1:1 chat that
  carried it, the members of a group whose chat carried it.
- signed links: HMAC-SHA256 of (fileId, variant, expiry) with Files.LinkSecret
  (or a key derived from Auth.AccessSecret, the same on every node).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from pathlib import Path
from typing import Iterable, Sequence

import filetype
import gevent
from PIL import Image, ImageOps, UnidentifiedImageError
from werkzeug.sansio.multipart import NEED_DATA, Data, Epilogue, Field, File, MultipartDecoder

from skyeim.config import FilesConfig
from skyeim.gateway.backends.clients import BackendFailure
from skyeim.gateway.backends.files import THUMBNAIL, FileRecords, Storage, StorageUnavailable
from skyeim.gateway.features.base import GroupMembership, backend_error
from skyeim.gateway.frames.codec import FrameError
from skyeim.protocol import ContentType, ErrorCode
from skyeim.web import ApiError, bad_request

log = logging.getLogger(__name__)

FILE_CONTENT_TYPES = frozenset({ContentType.IMAGE, ContentType.FILE, ContentType.VOICE})
SNIFF_BYTES = 8192            # the head kept for sniffing
MAX_FIELDS = 16               # form fields besides the file (ignored) in one upload
MAX_DECODER_BUFFER = 1 << 20  # bytes the multipart decoder may hold between two chunks
MAX_NAME = 255
FILE_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")   # as the Message service checks it
_EXIF_ORIENTATION = 0x0112


def sniff(head: bytes) -> str | None:
    """The MIME type of content starting with ``head``; None when nothing matches."""
    kind = filetype.guess(head)
    if kind is not None:
        return kind.mime
    if head and b"\x00" not in head:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as e:
            # a multi-byte character cut at the end of the head is still text
            if e.start < len(head) - 3:
                return None
        return "text/plain"
    return None


def type_allowed(mime: str, allowed: Iterable[str]) -> bool:
    family = mime.split("/", 1)[0] + "/*"
    return any(a == mime or a == family for a in allowed)


def clean_name(raw: str | None) -> str:
    """The file name to show: its last path part, no control characters, at most 255."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return name[:MAX_NAME] or "file"


def image_facts(path: Path, thumb_path: Path, size: int, max_pixels: int
                ) -> tuple[int, int, str | None] | None:
    """(width, height, thumbnail MIME or None) of an image file; its thumbnail written
    to ``thumb_path``. None when Pillow cannot read it. Runs in a worker thread."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            pixels = width * height
            if im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width        # shown turned (a phone's photo)
            if pixels > max_pixels:
                return width, height, None
            im.draft("RGB", (size, size))            # JPEG: decode at a reduced scale
            im.seek(0)
            frame = ImageOps.exif_transpose(im)
            frame = frame.convert("RGBA") if frame.mode in ("RGBA", "LA", "P", "PA") \
                else frame.convert("RGB")
            frame.thumbnail((size, size))
            if frame.mode == "RGBA":
                frame.save(thumb_path, "PNG", optimize=True)
                return width, height, "image/png"
            frame.save(thumb_path, "JPEG", quality=80)
            return width, height, "image/jpeg"
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        log.info("an uploaded image could not be read: %s", e)
        return None


class Files:
    def __init__(self, *, cfg: FilesConfig, access_secret: str, records: FileRecords,
                 storage: Storage, membership: GroupMembership):
        self.cfg, self.records, self.storage = cfg, records, storage
        self.membership = membership
        key = cfg.link_secret.encode() or hmac.new(access_secret.encode(), b"skyeim file links",
                                                   hashlib.sha256).digest()
        self._link_key = key

    def start(self) -> None:
        self.storage.start()

    # -- uploads ------------------------------------------------------------------------

    def upload(self, uid: int, boundary: bytes, chunks, declared_length: int | None) -> dict:
        """Store the file part of a multipart body read from ``chunks``; its answer.
        ApiError 413 (too large: the rest of the body is left unread), 415, 400."""
        limit = self.cfg.max_size
        if declared_length is not None and declared_length > limit + 64 * 1024:
            raise self._too_large()
        # the decoder's buffer is emptied after every chunk (each event handled at once);
        # its bound only stops a part's headers that never end
        decoder = MultipartDecoder(boundary, max_form_memory_size=MAX_DECODER_BUFFER,
                                   max_parts=MAX_FIELDS + 1)
        tmp, out = self.storage.new_upload()
        size, head, name, in_file, done_file, fields = 0, b"", None, False, False, 0
        try:
            try:
                for chunk in _then_none(chunks):
                    decoder.receive_data(chunk)
                    event = decoder.next_event()
                    while event is not NEED_DATA:
                        if isinstance(event, File) and not done_file and event.name == "file":
                            in_file, name = True, event.filename
                        elif isinstance(event, (Field, File)):
                            in_file = False
                            fields += 1
                            if fields > MAX_FIELDS:
                                raise bad_request("too many form fields")
                        elif isinstance(event, Data) and in_file:
                            size += len(event.data)
                            if size > limit:
                                raise self._too_large()
                            if len(head) < SNIFF_BYTES:
                                head += event.data[:SNIFF_BYTES - len(head)]
                            out.write(event.data)
                            if not event.more_data:
                                in_file, done_file = False, True
                        elif isinstance(event, Epilogue):
                            break
                        event = decoder.next_event()
            except ValueError as e:       # werkzeug: a malformed body
                raise bad_request(f"not a valid multipart/form-data body: {e}") from None
            out.close()
            if not done_file:
                raise bad_request('the body must have a file part named "file"')
            mime = sniff(head)
            if mime is None or not type_allowed(mime, self.cfg.allowed_types):
                raise ApiError(415, ErrorCode.UNSUPPORTED_TYPE,
                               f"files of type {mime or 'unknown'} are not accepted here")
            return self._store(uid, tmp, size, mime, clean_name(name))
        finally:
            out.close()
            tmp.unlink(missing_ok=True)

    def _too_large(self) -> ApiError:
        return ApiError(413, ErrorCode.TOO_LARGE,
                        f"a file may have at most {self.cfg.max_size} bytes (Files.MaxSize)")

    def _store(self, uid: int, tmp: Path, size: int, mime: str, name: str) -> dict:
        file_id = secrets.token_urlsafe(18)             # 24 characters, 144 random bits
        record = {"fileId": file_id, "ownerId": uid, "size": size, "mime": mime, "name": name,
                  "thumbnail": False}
        thumb_tmp = tmp.with_name(tmp.name + ".thumb")
        try:
            if mime.startswith("image/"):
                facts = gevent.get_hub().threadpool.spawn(
                    image_facts, tmp, thumb_tmp, self.cfg.thumbnail_size,
                    self.cfg.max_image_pixels).get()
                if facts is None:
                    raise ApiError(415, ErrorCode.UNSUPPORTED_TYPE,
                                   f"the {mime} image could not be read")
                record["width"], record["height"] = facts[0], facts[1]
                if facts[2]:
                    self.storage.put(thumb_tmp, file_id, THUMBNAIL)
                    record["thumbnail"] = True
            self.storage.put(tmp, file_id)
            try:
                stored = self.records.create(record)
            except BaseException:
                self.storage.remove(file_id)
                raise
        except StorageUnavailable as e:
            log.warning("user=%s upload not stored: %s", uid, e)
            raise storage_unavailable() from None
        finally:
            thumb_tmp.unlink(missing_ok=True)
        log.info("user=%s uploaded file=%s %s %d bytes", uid, file_id, mime, size)
        return self.answer(stored)

    def answer(self, record: dict) -> dict:
        """What the REST API says of a file: the record, a signed url (and thumbnailUrl)."""
        expires = int(time.time()) + self.cfg.link_ttl
        out = {k: record[k] for k in ("fileId", "name", "size", "mime") if k in record}
        if "width" in record:
            out["width"], out["height"] = record["width"], record["height"]
        out["url"] = self.signed_url(record["fileId"], "", expires)
        if record.get("thumbnail"):
            out["thumbnailUrl"] = self.signed_url(record["fileId"], THUMBNAIL, expires)
        out["expiresAt"] = expires
        return out

    # -- who may read -------------------------------------------------------------------

    def readable(self, uid: int, file_id: str) -> dict | None:
        """The record when ``uid`` may read the file; None when unknown or not allowed.
        Raises BackendFailure (or FrameError unavailable from the membership check)."""
        found = self.records.access(file_id, uid)
        if found is None:
            return None
        if found.get("granted"):
            return found
        for gid in found.get("groupIds") or ():
            try:
                self.membership.member_ids(gid, uid)
                return found
            except FrameError as e:
                if e.code != ErrorCode.FORBIDDEN:
                    raise
        return None

    def record(self, file_id: str) -> dict | None:
        return self.records.access(file_id, None)

    # -- signed links ---------------------------------------------------------------------

    def _signature(self, file_id: str, variant: str, expires: int) -> str:
        mac = hmac.new(self._link_key, f"{file_id}/{variant}/{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:24]).decode().rstrip("=")

    def signed_url(self, file_id: str, variant: str, expires: int) -> str:
        path = f"/api/files/{file_id}" + (f"/{variant}nail" if variant == THUMBNAIL else "")
        return f"{path}?expires={expires}&sig={self._signature(file_id, variant, expires)}"

    def link_valid(self, file_id: str, variant: str, expires: str | None, sig: str | None) -> bool:
        if not expires or not sig or not expires.isascii() or not expires.isdigit():
            return False
        if int(expires) < time.time():
            return False
        return hmac.compare_digest(sig, self._signature(file_id, variant, int(expires)))

    # -- the chat screen ------------------------------------------------------------------

    def screen(self, drafts: list[dict], msg_ids: Sequence[str | None]) -> list[dict | FrameError]:
        out: list[dict | FrameError] = []
        for draft, msg_id in zip(drafts, msg_ids):
            try:
                out.append(self._screen_one(draft, msg_id))
            except FrameError as e:          # the membership check's: echo this chat's msgId
                out.append(e if e.msg_id == msg_id else FrameError(e.code, e.message, msg_id))
            except BackendFailure as e:
                out.append(backend_error(e, "message", msg_id))
        return out

    def _screen_one(self, draft: dict, msg_id: str | None) -> dict:
        if draft.get("contentType") not in FILE_CONTENT_TYPES:
            return draft
        content = file_content(draft["content"])
        if content is None:
            return draft                     # not a file reference: as a v1 client sends it
        file_id = content["fileId"]
        if not isinstance(file_id, str) or not FILE_ID_PATTERN.fullmatch(file_id):
            raise FrameError(ErrorCode.BAD_REQUEST, "fileId must be the id POST /api/files answered",
                             msg_id)
        uid = draft["fromUserId"]
        found = self.readable(uid, file_id)
        if found is None:
            raise FrameError(ErrorCode.FORBIDDEN, "no such file of yours to send", msg_id)
        if "groupId" in draft:
            granted = self.records.grant_group(file_id, draft["groupId"])
        else:
            granted = self.records.grant_users(file_id, [uid, draft["toUserId"]])
        if not granted:
            raise FrameError(ErrorCode.FORBIDDEN, "no such file of yours to send", msg_id)
        content.update(size=found["size"], mime=found["mime"])
        content.setdefault("name", found["name"])
        if "width" in found:
            content["width"], content["height"] = found["width"], found["height"]
        return {**draft, "content": json.dumps(content, ensure_ascii=False, separators=(",", ":"))}


def storage_unavailable() -> ApiError:
    return ApiError(503, ErrorCode.UNAVAILABLE, "the file storage is unavailable; try again later")


def file_content(content: str) -> dict | None:
    """The JSON object of a file message's content, when it is one with a fileId."""
    if not content.startswith("{"):
        return None
    try:
        value = json.loads(content)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "fileId" in value else None


def _then_none(chunks):
    """The body's chunks, then None (the decoder's end of input)."""
    yield from chunks
    yield None
