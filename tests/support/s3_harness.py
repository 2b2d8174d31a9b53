"""A real S3-compatible server for the file tests: moto's server mode (``moto[server]``,
tests/requirements.txt) as its own process on a free port of 127.0.0.1, plus the
gateway's Files config that stores to one of its buckets (Files.Storage s3://...)."""
from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Iterator

import boto3
import requests
from botocore.config import Config

from harness import PYTHON, REPO, reap, free_port

ACCESS_KEY, SECRET_KEY, REGION = "skyeim-test", "skyeim-test-secret", "us-east-1"
START_TIMEOUT = 30.0


class MotoServer:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tmp) / "moto.log"
        self.proc: subprocess.Popen | None = None
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(connect_timeout=5, read_timeout=10, retries={"total_max_attempts": 2},
                          s3={"addressing_style": "path"}))

    def start(self) -> "MotoServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PYTHON, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(self.port)], cwd=REPO, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(requests.RequestException):
                requests.get(self.endpoint + "/moto-api/", timeout=1)
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server not up within {START_TIMEOUT:g}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            reap(self.proc, 10)

    def make_bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object key in ``bucket`` (a test's few: one page of 1000 is enough)."""
        got = self.client.list_objects_v2(Bucket=bucket)
        return sorted(o["Key"] for o in got.get("Contents", ()))

    def files_config(self, bucket: str, prefix: str = "", **extra) -> dict:
        """The gateway's Files section storing to ``bucket`` here (with the keys in the
        config; the AWS_* environment would do as well)."""
        url = f"s3://{bucket}" + (f"/{prefix}" if prefix else "")
        return {"Storage": url, "S3Endpoint": self.endpoint, "S3Region": REGION,
                "S3AccessKey": ACCESS_KEY, "S3SecretKey": SECRET_KEY, "S3Timeout": 5,
                "S3Retries": 1, **extra}


@contextlib.contextmanager
def running_moto(tmp: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp).start()
    try:
        yield server
    finally:
        server.stop()
