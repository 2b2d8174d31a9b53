"""Files as the gateway sees them (docs/protocol.md "Files, images and voice"):
their records and grants in the Message service (/v1/files), their bytes in a
local directory (Files.Dir; every node of a cluster must see the same one).

An S3-compatible store (Files.Storage: an s3:// URL) is not built: Storage is
the seam (put a finished upload, open it, its path for a ranged answer).
"""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from skyeim.gateway.backends.clients import BackendRejected, MessageService

THUMBNAIL = "thumb"       # the variant of an image's thumbnail
STALE_UPLOAD_SECONDS = 3600   # a temporary upload file this old was left by a crash


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


class LocalStorage:
    """Files.Dir: <dir>/<2 chars of the id>/<id>[.thumb]; uploads in progress in <dir>/tmp."""

    def __init__(self, directory: str):
        self.root = Path(directory)
        self.tmp = self.root / "tmp"

    def start(self) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        # what a crash left half-written (never a finished file); only old ones, since
        # the nodes of a cluster share the directory and another may be mid-upload
        cutoff = time.time() - STALE_UPLOAD_SECONDS
        for stale in self.tmp.iterdir():
            try:
                if stale.stat().st_mtime < cutoff:
                    stale.unlink(missing_ok=True)
            except OSError:
                pass

    def new_upload(self) -> tuple[Path, object]:
        """A fresh temporary file (path, binary file object) for an upload's bytes."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        path = self.tmp / f"up-{secrets.token_hex(12)}"
        return path, open(path, "xb")

    def path(self, file_id: str, variant: str = "") -> Path:
        return self.root / file_id[:2] / (file_id + (f".{variant}" if variant else ""))

    def put(self, tmp: Path, file_id: str, variant: str = "") -> None:
        """Move a finished temporary file into place (atomic within one file system)."""
        dest = self.path(file_id, variant)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)

    def exists(self, file_id: str, variant: str = "") -> bool:
        return self.path(file_id, variant).is_file()

    def remove(self, file_id: str) -> None:
        for variant in ("", THUMBNAIL):
            self.path(file_id, variant).unlink(missing_ok=True)
