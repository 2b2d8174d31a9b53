"""Helpers for the file tests (docs/protocol.md "Files, images and voice"): sample
contents (made here, so every sniffed type is real), uploads through the REST API,
and a raw chunked upload that sees how the gateway stops an oversized body."""
from __future__ import annotations

import io
import json
import select
import socket
import time
import wave
from pathlib import Path

from PIL import Image

from harness import System, User

ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 300


def png_bytes(width: int = 640, height: int = 480, color=(200, 30, 30, 255)) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), color).save(out, "PNG")
    return out.getvalue()


def jpeg_bytes(width: int = 800, height: int = 600) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (20, 120, 220)).save(out, "JPEG", quality=85)
    return out.getvalue()


def wav_bytes(seconds: float = 0.5, rate: int = 8000) -> bytes:
    """A voice note: mono 16-bit PCM WAV of silence (sniffed as audio/x-wav)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


def upload(system: System, user: User | str | None, data: bytes, name: str = "f.bin",
           part_type: str = "application/octet-stream"):
    return system.api("POST", "/api/files", user, files={"file": (name, data, part_type)})


def file_message(answer: dict, **extra) -> str:
    body = {"fileId": answer["fileId"], "name": answer["name"], "size": 1, "mime": "x/y"}
    body.update(extra)
    return json.dumps(body)


def stored_files(system: System) -> list[str]:
    """Every file the system keeps: under its Files.Dir (``system.files_dir``: finished and
    temporary files) and, with S3 storage (``system.s3``: the MotoServer and bucket of
    s3_harness), the bucket's objects."""
    root: Path = system.files_dir
    out = sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    s3 = getattr(system, "s3", None)
    if s3 is not None:
        server, bucket = s3
        out += [f"s3://{bucket}/{key}" for key in server.keys(bucket)]
    return out


def chunked_upload(system: System, token: str, total: int, chunk: int = 16384,
                   keep_sending: int = 64 << 20, timeout: float = 20.0) -> tuple[int, bytes, int | None]:
    """POST /api/files with a chunked body whose file part would have ``total`` bytes,
    sent until the gateway answers. Then it goes on sending, up to ``keep_sending``
    bytes more, to see the gateway drop the connection. Returns (status, the answer,
    bytes sent after the answer until the connection broke, or None if it never did)."""
    boundary = "skyeimtestboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"big.txt\"\r\nContent-Type: text/plain\r\n\r\n").encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)   # little in flight
    sock.settimeout(timeout)
    sock.connect((system.host, system.port))
    piece = b"a" * chunk
    frame = b"%x\r\n%s\r\n" % (len(piece), piece)
    try:
        sock.sendall((f"POST /api/files HTTP/1.1\r\nHost: {system.host}\r\n"
                      f"Authorization: Bearer {token}\r\n"
                      f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                      f"Transfer-Encoding: chunked\r\n\r\n").encode())
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        sent, deadline = 0, time.monotonic() + timeout
        while sent < total and time.monotonic() < deadline:
            if select.select([sock], [], [], 0)[0]:
                break                                  # the gateway answered
            sock.sendall(frame)
            sent += chunk
        answer = b""
        while not _complete(answer) and time.monotonic() < deadline:
            if not select.select([sock], [], [], 1.0)[0]:
                continue
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
        after = 0
        sock.settimeout(5.0)
        try:
            while after < keep_sending and time.monotonic() < deadline:
                sock.sendall(frame)
                after += chunk
        except OSError:
            return status, answer, after
        return status, answer, None
    finally:
        sock.close()


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False
