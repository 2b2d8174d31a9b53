"""Files, images and voice over REST (docs/protocol.md "Files, images and voice"):

  POST /api/files                  multipart/form-data, one part named "file"; Bearer
                                   -> {fileId, name, size, mime, width?, height?, url,
                                       thumbnailUrl?, expiresAt}
  GET  /api/files/<id>             the bytes: Bearer (the uploader, or a member of a
                                   conversation it was sent in) or a signed URL
                                   (?expires=&sig=); Range (206, 416)
  GET  /api/files/<id>/thumbnail   an image's thumbnail, the same rules
  GET  /api/files/<id>/link        Bearer -> the record with fresh signed URLs (for <img>)
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request, send_file
from werkzeug.exceptions import RequestedRangeNotSatisfiable
from werkzeug.http import parse_options_header

from skyeim.gateway.backends.files import THUMBNAIL
from skyeim.gateway.features.files import FILE_ID_PATTERN
from skyeim.gateway.frames.codec import FrameError
from skyeim.gateway.rest.caller import bearer_token, caller_id, current_gateway
from skyeim.gateway.transport.body import body_chunks, refuse_rest
from skyeim.protocol import ErrorCode
from skyeim.web import ApiError, error_response

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
    if variant == THUMBNAIL:
        if not record.get("thumbnail") or not storage.exists(file_id, THUMBNAIL):
            raise ApiError(404, ErrorCode.NOT_FOUND, "this file has no thumbnail")
        path = storage.path(file_id, THUMBNAIL)
        with open(path, "rb") as f:         # a thumbnail is PNG (transparency) or JPEG
            mime = "image/png" if f.read(4) == b"\x89PNG" else "image/jpeg"
    else:
        path, mime = storage.path(file_id), record["mime"]
        if not path.is_file():
            raise ApiError(404, ErrorCode.NOT_FOUND, "this file's bytes are missing")
    inline = variant == THUMBNAIL or record["mime"] in _INLINE
    # Range (206, 416), If-None-Match and Last-Modified: werkzeug's conditional answer
    try:
        resp = send_file(path, mimetype=mime, as_attachment=not inline,
                         download_name=record["name"] if variant != THUMBNAIL else None,
                         conditional=True, etag=f"{file_id}-{variant or 'file'}", max_age=0)
    except RequestedRangeNotSatisfiable:
        resp = error_response(416, ErrorCode.BAD_REQUEST, "the range is not within the file")
        resp.headers["Content-Range"] = f"bytes */{path.stat().st_size}"
        return resp
    if variant == THUMBNAIL:
        resp.headers["Content-Disposition"] = "inline"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    resp.headers["Cache-Control"] = "private, max-age=0"
    return resp
