"""Files, images and voice for the SDK (extension: docs/protocol.md "Files, images
and voice"): what an upload reads, and the content of a file message.

A file message is a chat or groupchat with contentType 2 (image), 3 (file) or
4 (voice) whose content is a JSON object:
``{"fileId", "name", "size", "mime", "width"?, "height"?, "durationMs"?}``;
the gateway fills size/mime/width/height from its record of the upload.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

Source = str | os.PathLike | bytes | bytearray


def open_source(source: Source, name: str | None) -> tuple[str, bytes | BinaryIO]:
    """(file name, body) of a path or of bytes (named ``name``, default "file")."""
    if isinstance(source, (bytes, bytearray)):
        return name or "file", bytes(source)
    path = Path(source)
    return name or path.name, open(path, "rb")


def file_content(upload: dict, name: str | None = None, **extra: Any) -> str:
    """The content of a file message for an upload's answer (``Api.upload_file``)."""
    body = {"fileId": upload["fileId"], "name": name or upload.get("name") or "file",
            "size": upload.get("size"), "mime": upload.get("mime")}
    if "width" in upload:
        body["width"], body["height"] = upload["width"], upload["height"]
    body.update(extra)
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def parse_file_content(content: str) -> dict | None:
    """The JSON object of a file message's content, or None when it is not one."""
    try:
        value = json.loads(content)
    except (ValueError, TypeError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("fileId"), str) else None


def http_base(url: str) -> str:
    """The gateway's http(s)://HOST:PORT for a ws(s)://HOST:PORT/ws or http URL."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))
