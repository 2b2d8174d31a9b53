"""Files, images and voice over REST (docs/protocol.md "Files, images and voice"):

  POST /api/files                  multipart/form-data, one part named "file"; Bearer
                                   -> {fileId, name, size, mime, width?, height?, url,
                                       thumbnailUrl?, expiresAt}
  GET  /api/files/<id>             the bytes: Bearer (the uploader, or a member of a
                                   conversation it was sent in) or a signed URL
                                   (?expires=&sig=); Range (206, 416), from
                                   whichever storage (local or S3) holds it
  GET  /api/files/<id>/thumbnail   an image's thumbnail, the same rules
  GET  /api/files/<id>/link        Bearer -> the record with fresh signed URLs (for <img>)
"""
from __future__ import annotations

import logging
import unicodedata
from datetime import datetime, timezone
from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request
from werkzeug.http import is_resource_modified, parse_options_header, parse_range_header

from skyeim.gateway.backends.files import THUMBNAIL, Storage, StorageUnavailable
from skyeim.gateway.features.files import FILE_ID_PATTERN, storage_unavailable
from skyeim.gateway.frames.codec import FrameError
from skyeim.gateway.rest.caller import bearer_token, caller_id, current_gateway
from skyeim.gateway.transport.body import body_chunks, refuse_rest
from skyeim.protocol import ErrorCode
from skyeim.web import ApiError, error_response

log = logging.getLogger(__name__)

files_api = Blueprint("files_api", __name__, url_prefix="/api/files")

_INLINE = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_NOT_FOUND = "no such file (or not yours to read)"


@files_api.post("")
def upload():
    uid, gateway = caller_id(), current_gateway()
    mimetype, options = parse_options_header(request.headers.get("Content-Type", ""))
    boundary = options.get("boundary")
    if mimetype != "multipart/form-data" or not boundary:
        raise ApiError(415, ErrorCode.UNSUPPORTED_TYPE,
                       "send multipart/form-data with one part named \"file\"")
    environ = request.environ
    try:
        answer = gateway.files.upload(uid, boundary.encode("latin-1"), body_chunks(environ),
                                      request.content_length)
    except ApiError as e:
        if e.status != 413:
            raise
        resp = error_response(e.status, e.code, e.message)   # the rest of the body stays unread
        refuse_rest(environ, resp)
        return resp
    return jsonify(answer)


@files_api.get("/<file_id>")
def download(file_id: str):
    return _send(file_id, "")


@files_api.get("/<file_id>/thumbnail")
def thumbnail(file_id: str):
    return _send(file_id, THUMBNAIL)


@files_api.get("/<file_id>/link")
def link(file_id: str):
    uid, gateway = caller_id(), current_gateway()
    record = _readable(gateway, uid, _checked_id(file_id))
    return jsonify(gateway.files.answer(record))


def _checked_id(file_id: str) -> str:
    if not FILE_ID_PATTERN.fullmatch(file_id):
        raise ApiError(404, ErrorCode.NOT_FOUND, _NOT_FOUND)
    return file_id


def _readable(gateway, uid: int, file_id: str) -> dict:
    try:
        record = gateway.files.readable(uid, file_id)
    except FrameError as e:      # a group's members could not be fetched
        raise ApiError(503, ErrorCode.UNAVAILABLE, e.message) from None
    if record is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, _NOT_FOUND)
    return record


def _send(file_id: str, variant: str):
    gateway = current_gateway()
    file_id = _checked_id(file_id)
    if request.args.get("sig") is not None and bearer_token() is None:
        if not gateway.files.link_valid(file_id, variant, request.args.get("expires"),
                                        request.args.get("sig")):
            raise ApiError(403, ErrorCode.FORBIDDEN, "this link is invalid or has expired")
        record = gateway.files.record(file_id)
        if record is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, _NOT_FOUND)
    else:
        record = _readable(gateway, caller_id(), file_id)
    storage = gateway.files.storage
    try:
        return _answer(storage, file_id, variant, record)
    except StorageUnavailable as e:
        log.warning("file=%s not served: %s", file_id, e)
        raise storage_unavailable() from None


def _answer(storage: Storage, file_id: str, variant: str, record: dict) -> Response:
    """The bytes of a stored file, whichever the storage: Range (206, 416), If-None-Match
    and If-Modified-Since (304), If-Range, as werkzeug's send_file answers a local file.
    The storage is read with the range asked, so S3 sends only those bytes."""
    blob = storage.stat(file_id, variant)
    if variant == THUMBNAIL:
        if not record.get("thumbnail") or blob is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, "this file has no thumbnail")
        # a thumbnail is PNG (transparency) or JPEG
        mime = "image/png" if b"".join(storage.read(file_id, variant, 0, 4)) == b"\x89PNG" \
            else "image/jpeg"
    else:
        mime = record["mime"]
        if blob is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, "this file's bytes are missing")
    etag = f"{file_id}-{variant or 'file'}"
    modified = datetime.fromtimestamp(int(blob.modified), timezone.utc)   # HTTP dates: whole s
    environ = request.environ
    if not is_resource_modified(environ, etag, last_modified=modified):
        resp = Response(status=304)
    else:
        start, end, status = 0, blob.size, 200
        if "HTTP_RANGE" in environ and (
                "HTTP_IF_RANGE" not in environ or not is_resource_modified(
                    environ, etag, last_modified=modified, ignore_if_range=False)):
            asked = parse_range_header(environ["HTTP_RANGE"])
            span = asked.range_for_length(blob.size) if asked is not None else None
            if span is None:
                resp = error_response(416, ErrorCode.BAD_REQUEST, "the range is not within the file")
                resp.headers["Content-Range"] = f"bytes */{blob.size}"
                return resp
            (start, end), status = span, 206
        # HEAD: the headers only (no GET of the bytes from S3)
        body = storage.read(file_id, variant, start, end) if request.method != "HEAD" else ()
        resp = Response(body, status=status, mimetype=mime, direct_passthrough=True)
        resp.content_length = end - start
        if status == 206:
            resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{blob.size}"
        if variant == THUMBNAIL:
            resp.headers["Content-Disposition"] = "inline"
        else:
            _disposition(resp, record["name"], inline=record["mime"] in _INLINE)
    resp.headers["Accept-Ranges"] = "bytes"
    resp.set_etag(etag)
    resp.last_modified = modified
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    resp.headers["Cache-Control"] = "private, max-age=0"
    return resp


def _disposition(resp: Response, name: str, inline: bool) -> None:
    """Content-Disposition with the file's name (RFC 6266; filename* when not ASCII),
    as werkzeug's send_file writes it."""
    try:
        name.encode("ascii")
        names = {"filename": name}
    except UnicodeEncodeError:
        simple = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
        names = {"filename": simple, "filename*": f"UTF-8''{quote(name, safe='!#$&+-.^_`|~')}"}
    resp.headers.set("Content-Disposition", "inline" if inline else "attachment", **names)
