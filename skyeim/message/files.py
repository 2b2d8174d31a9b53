"""File records in the Message service (docs/protocol.md "Files, images and voice").

The gateway stores the bytes (Files.Dir); this service keeps what it must share
with every gateway of a cluster: who uploaded a file, its sniffed type and size,
and which conversations it was sent in (the grants that decide who may download it).

* ``files``: one row per upload; ``file_id`` is the gateway's random id.
* ``file_grants``: (file, user) for a 1:1 chat's two users, (file, group) for a
  group chat; written before the chat that carries the file is stored.

  POST /v1/files                 {fileId, ownerId, size, mime, name, width?, height?, thumbnail}
                                 -> the record
  GET  /v1/files/<id>?userId=    -> the record + {granted: bool, groupIds: [...]}: whether
                                    the user is the owner or a granted user, and the groups
                                    granted (the gateway checks membership); 404 unknown
  POST /v1/files/<id>/grants     {userIds: [a, b]} | {groupId} -> {ok}  (idempotent)
"""
from __future__ import annotations

import re
from typing import Any

from flask import Flask, request
from sqlalchemy import (BigInteger, Boolean, Column, Integer, PrimaryKeyConstraint, SmallInteger,
                        String, Table, exc, or_, select)
from sqlalchemy.engine import Connection

from skyeim.db import Database, now_ms
from skyeim.message.store import metadata
from skyeim.protocol import MAX_USER_ID, ErrorCode, is_positive_id, is_user_id
from skyeim.web import ApiError, bad_request, json_body

FILE_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
GRANTEE_USER, GRANTEE_GROUP = 1, 2
MAX_GROUP_GRANTS = 100        # groups listed by one access lookup

files = Table(
    "files", metadata,
    Column("file_id", String(64), primary_key=True),
    Column("owner_id", BigInteger, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mime", String(127), nullable=False),
    Column("name", String(255), nullable=False),
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("thumbnail", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),     # ms
)

file_grants = Table(
    "file_grants", metadata,
    Column("file_id", String(64), nullable=False),
    Column("grantee_kind", SmallInteger, nullable=False),  # 1 user, 2 group
    Column("grantee_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("file_id", "grantee_kind", "grantee_id", name="pk_file_grants"),
)


def record(row) -> dict[str, Any]:
    out = {"fileId": row.file_id, "ownerId": row.owner_id, "size": row.size, "mime": row.mime,
           "name": row.name, "thumbnail": bool(row.thumbnail), "createdAt": row.created_at}
    if row.width is not None:
        out["width"], out["height"] = row.width, row.height
    return out


def add_file(conn: Connection, values: dict) -> dict:
    conn.execute(files.insert().values(**values, created_at=now_ms()))
    return record(conn.execute(select(files).where(files.c.file_id == values["file_id"])).one())


def access(conn: Connection, file_id: str, user_id: int | None) -> dict | None:
    row = conn.execute(select(files).where(files.c.file_id == file_id)).first()
    if row is None:
        return None
    grants = conn.execute(
        select(file_grants.c.grantee_kind, file_grants.c.grantee_id)
        .where(file_grants.c.file_id == file_id,
               or_(file_grants.c.grantee_kind == GRANTEE_GROUP,
                   file_grants.c.grantee_id == (user_id or 0)))
        .limit(MAX_GROUP_GRANTS + 1)).all()
    granted = row.owner_id == user_id or any(
        g.grantee_kind == GRANTEE_USER for g in grants)
    groups = [g.grantee_id for g in grants if g.grantee_kind == GRANTEE_GROUP]
    return {**record(row), "granted": granted, "groupIds": groups[:MAX_GROUP_GRANTS]}


def grant(conn: Connection, file_id: str, grantees: list[tuple[int, int]]) -> bool:
    """Grant (kind, id) pairs; False when the file is unknown. Idempotent."""
    if conn.execute(select(files.c.file_id).where(files.c.file_id == file_id)).first() is None:
        return False
    for kind, gid in grantees:
        have = conn.execute(select(file_grants.c.file_id).where(
            file_grants.c.file_id == file_id, file_grants.c.grantee_kind == kind,
            file_grants.c.grantee_id == gid)).first()
        if have is None:
            savepoint = conn.begin_nested()
            try:
                conn.execute(file_grants.insert().values(file_id=file_id, grantee_kind=kind,
                                                         grantee_id=gid))
                savepoint.commit()
            except exc.IntegrityError:      # a concurrent identical grant
                savepoint.rollback()
    return True


def add_routes(app: Flask, db: Database) -> None:
    @app.post("/v1/files")
    def create_file():
        body = json_body()
        file_id = _file_id(body.get("fileId"))
        owner = body.get("ownerId")
        if not is_user_id(owner):
            raise bad_request("ownerId must be an integer user id")
        size = body.get("size")
        if type(size) is not int or not 0 <= size <= MAX_USER_ID:
            raise bad_request("size must be a whole number of bytes")
        mime, name = body.get("mime"), body.get("name")
        if not isinstance(mime, str) or not 3 <= len(mime) <= 127:
            raise bad_request("mime must be a MIME type")
        if not isinstance(name, str) or not 1 <= len(name) <= 255:
            raise bad_request("name must be 1 to 255 characters")
        width, height = body.get("width"), body.get("height")
        if width is not None or height is not None:
            if not (is_positive_id(width) and is_positive_id(height)
                    and width < 2**31 and height < 2**31):
                raise bad_request("width and height must be positive whole numbers")
        values = {"file_id": file_id, "owner_id": owner, "size": size, "mime": mime,
                  "name": name, "width": width, "height": height,
                  "thumbnail": bool(body.get("thumbnail"))}
        try:
            return db.run(add_file, values)
        except exc.IntegrityError:
            raise ApiError(409, ErrorCode.CONFLICT, "this fileId exists") from None

    @app.get("/v1/files/<file_id>")
    def get_file(file_id: str):
        file_id = _file_id(file_id)
        raw = request.args.get("userId")
        uid = int(raw) if raw and raw.isascii() and raw.isdigit() and len(raw) <= 19 else None
        found = db.run(access, file_id, uid)
        if found is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, "no such file")
        return found

    @app.post("/v1/files/<file_id>/grants")
    def add_grants(file_id: str):
        file_id = _file_id(file_id)
        body = json_body()
        if body.get("groupId") is not None:
            if not is_positive_id(body["groupId"]):
                raise bad_request("groupId must be an integer group id")
            grantees = [(GRANTEE_GROUP, body["groupId"])]
        else:
            ids = body.get("userIds")
            if not isinstance(ids, list) or not 1 <= len(ids) <= 2 or \
                    not all(is_user_id(i) for i in ids):
                raise bad_request("userIds must be a list of one or two user ids")
            grantees = [(GRANTEE_USER, i) for i in dict.fromkeys(ids)]
        if not db.run(grant, file_id, grantees):
            raise ApiError(404, ErrorCode.NOT_FOUND, "no such file")
        return {"ok": True}


def _file_id(value: Any) -> str:
    if not isinstance(value, str) or not FILE_ID.fullmatch(value):
        raise bad_request("fileId must be 16 to 64 characters of A-Z a-z 0-9 _ -")
    return value
