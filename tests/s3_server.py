"""A real S3-compatible server for tests: moto's server as its own process over HTTP.

boto3 talks to it exactly as to MinIO or AWS (signatures, multipart, ranged GETs, errors
on the wire); nothing is patched in-process. :class:`MotoServer` can be stopped and started
again on the same port, which is how the tests take the store away under a running
davserver. Its state lives in memory: a restart starts with an empty store.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import uuid

import requests

from tests import services
from tests.live import _PROCS, _die_with_parent, free_port

ACCESS_KEY = "testing-access"
SECRET_KEY = "testing-secret-not-real"
REGION = "us-east-1"


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._client = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        if importlib.util.find_spec("moto.server") is None:
            raise AssertionError("moto is not installed (pip install 'moto[server]')")
        self._client = None  # a restarted server gets fresh connections
        # The interpreter running the tests, so a venv that is not on PATH works too.
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(self.port)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        _PROCS.add(self.proc)
        services.wait_ready(
            lambda: requests.get(f"{self.endpoint}/moto-api/", timeout=1).status_code == 200,
            self.proc, "moto_server")
        return self

    def stop(self) -> None:
        p, self.proc = self.proc, None
        services.stop(p, 5)

    def client(self):
        """A boto3 client of the test's own (made once: creating one costs a second)."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                aws_secret_access_key=SECRET_KEY, region_name=REGION,
                config=Config(s3={"addressing_style": "path"}))
        return self._client

    def new_bucket(self) -> str:
        name = f"t-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str, **kw):
        from davserver.storage.s3 import S3Settings

        base = dict(bucket=bucket, endpoint=self.endpoint, region=REGION,
                    access_key=ACCESS_KEY, secret_key=SECRET_KEY, path_style=True,
                    retries=2, connect_timeout=2, read_timeout=10)
        base.update(kw)
        return S3Settings(**base)

    def config_section(self, bucket: str, **kw) -> dict:
        """The ``[storage.s3]`` keys of a davserver config for ``bucket``."""
        doc = {"endpoint": self.endpoint, "bucket": bucket, "region": REGION,
               "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "path_style": True,
               "retries": 2, "connect_timeout": 2, "read_timeout": 10}
        doc.update(kw)
        return doc
