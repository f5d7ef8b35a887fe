#!/usr/bin/env python3
"""Large PUT and GET through davserver with its primary storage on S3, against
`rclone serve webdav` over a crypt remote on the same S3 server (moto_server, loopback).

    bench/s3_bench.py                  # 1 GiB, 1 run
    bench/s3_bench.py --size-mib 256 --runs 2

Prints a Markdown table: MB/s both ways, the ratio davserver / rclone, and the peak PSS of
each server's process tree (moto's own memory is not counted: it is the store). Both
servers write to the same moto process, one after the other, so the store's speed is the
same for both; it is often the bottleneck, which the ratios then show as close to 1.

Where davserver's memory goes (two server processes, PSS): ~37 MiB each at rest (Python,
WsgiDAV, boto3 and its clients); a PUT adds its multipart parts, part_size x
(parts_in_flight + 1 being filled + 1 copy) = 8 MiB x 5; a GET adds only the read-ahead.
Without davserver/malloc_tuning.py those part buffers stayed in glibc's per-thread
arenas after each upload, so the peak grew with the file (137 -> 164 MiB from 64 MiB to
256 MiB); with it the peak is flat (120-132 MiB PUT, 89-91 MiB GET, 64 MiB to 1 GiB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from measure import Client, big_get, big_put, create_files_via_server, propfind  # noqa: E402
from servers import (  # noqa: E402
    BENCH_PASS,
    BENCH_USER,
    DAV_BLOCK_SIZE,
    DavServer,
    RcloneCrypt,
    free_port,
)

ACCESS, SECRET, REGION = "bench-access", "bench-secret", "us-east-1"


class Moto:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("moto_server did not start")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bucket(self, name: str, versioned: bool = False) -> str:
        import boto3

        c = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS,
                         aws_secret_access_key=SECRET, region_name=REGION)
        c.create_bucket(Bucket=name)
        if versioned:
            c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class DavServerS3(DavServer):
    def __init__(self, workdir: str, moto: Moto) -> None:
        super().__init__(workdir)
        self.name = self.label = "davserver-s3"
        self.moto = moto

    def prepare(self) -> None:
        """Config with the s3 backend first, so ``user:add`` makes the home on S3."""
        with open(self.config, "w") as f:
            f.write(f"[server]\nworkers = {self.workers}\nthreads = {self.threads}\n"
                    f"block_size = {DAV_BLOCK_SIZE}\n"
                    f'[storage]\nbackend = "s3"\n'
                    f'[storage.s3]\nendpoint = "{self.moto.endpoint}"\n'
                    f'bucket = "{self.moto.bucket("davserver")}"\nregion = "{REGION}"\n'
                    f'access_key = "{ACCESS}"\nsecret_key = "{SECRET}"\npath_style = true\n'
                    f'[logging]\nlevel = "warning"\n')
        self._cli("init")
        env = self.env()
        env["DAVSERVER_PASS"] = BENCH_PASS
        self._cli("user:add", BENCH_USER, "--password-from-env", env=env)


class RcloneCryptS3(RcloneCrypt):
    name = "rclone-crypt-s3"
    label = "rclone serve webdav, crypt over s3"

    def __init__(self, workdir: str, moto: Moto) -> None:
        super().__init__(workdir)
        self.moto = moto

    def env(self) -> dict:
        # rclone's S3 client fails on a CA bundle it cannot apply, and moto is plain HTTP.
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)
        return env

    def prepare(self) -> None:
        def obscure(pw: str) -> str:
            return subprocess.run(["rclone", "obscure", pw], capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()

        # rclone (1.60) checks a multipart upload with HEAD ?versionId=<id from the
        # upload>; moto answers "null" for an unversioned bucket and then refuses that HEAD.
        bucket = self.moto.bucket("rclone", versioned=True)
        with open(self.conf, "w") as f:
            f.write(f"[benchs3]\ntype = s3\nprovider = Other\nendpoint = {self.moto.endpoint}\n"
                    f"access_key_id = {ACCESS}\nsecret_access_key = {SECRET}\n"
                    f"region = {REGION}\nforce_path_style = true\n\n"
                    f"[benchcrypt]\ntype = crypt\nremote = benchs3:{bucket}/crypt\n"
                    f"password = {obscure('bench-crypt-password')}\n"
                    f"password2 = {obscure('bench-crypt-salt')}\n")


def folder_figures(srv, cl: Client, n: int) -> tuple[float, float]:
    """(PROPFIND depth 1 seconds, MOVE seconds) for a folder of ``n`` small files."""
    cl.mkcol("many")
    create_files_via_server(srv.port, srv.base, srv.auth_headers(), "many",
                            [f"f{i:05d}.txt" for i in range(n)], b"x" * 1000)
    t_prop = propfind(cl, "many", n)
    t0 = time.perf_counter()
    cl.request("MOVE", "many", headers={
        "Destination": f"http://127.0.0.1:{srv.port}{srv.base}renamed"}, ok=(201, 204))
    t_move = time.perf_counter() - t0
    cl.request("DELETE", "renamed", ok=(200, 204))
    return t_prop, t_move


def run(size: int, runs: int, workdir: str, files: int) -> str:
    moto = Moto()
    rows = []
    try:
        for srv in (DavServerS3(workdir, moto), RcloneCryptS3(workdir, moto)):
            srv.prepare()
            srv.start()
            try:
                cl = Client(srv.port, srv.base, srv.auth_headers())
                put_v, get_v, pss = [], [], 0
                for i in range(runs):
                    rel = f"big-{i}.bin"
                    mbs, peak, _t = big_put(cl, rel, size, srv.pid)
                    put_v.append(mbs)
                    pss = max(pss, peak)
                    mbs, peak = big_get(cl, rel, size, srv.pid)
                    get_v.append(mbs)
                    pss = max(pss, peak)
                    cl.request("DELETE", rel, ok=(200, 204, 404))
                t_prop, t_move = folder_figures(srv, cl, files) if files else (0.0, 0.0)
                cl.close()
                rows.append((srv.label, max(put_v), max(get_v), pss, t_prop, t_move))
                print(f"{srv.label}: PUT {max(put_v):.0f} MB/s, GET {max(get_v):.0f} MB/s, "
                      f"peak PSS {pss / 2**20:.0f} MiB", file=sys.stderr)
            finally:
                srv.stop()
    finally:
        moto.stop()
    (dav, dput, dget, dpss, dprop, dmove), (rcl, rput, rget, rpss, rprop, rmove) = rows
    return "\n".join([
        f"{size >> 20} MiB, best of {runs}, moto_server on loopback; folder of {files} files\n",
        f"| server | PUT MB/s | GET MB/s | peak PSS MiB | PROPFIND {files} s | MOVE {files} s |",
        "|---|---|---|---|---|---|",
        f"| {dav} | {dput:.0f} | {dget:.0f} | {dpss / 2**20:.0f} | {dprop:.2f} | {dmove:.2f} |",
        f"| {rcl} | {rput:.0f} | {rget:.0f} | {rpss / 2**20:.0f} | {rprop:.2f} | {rmove:.2f} |",
        f"| ratio davserver / rclone | {dput / rput:.2f} | {dget / rget:.2f} | | | |",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--files", type=int, default=1000,
                    help="small files in the folder that is listed and renamed (0: skip)")
    args = ap.parse_args()
    for tool in ("rclone", "davserver"):
        if shutil.which(tool) is None:
            print(f"s3_bench: {tool} is not installed", file=sys.stderr)
            return 1
    try:
        import moto.server  # noqa: F401
    except ImportError:
        print("s3_bench: moto is not installed (pip install 'moto[server]')", file=sys.stderr)
        return 1
    workdir = tempfile.mkdtemp(prefix="s3bench-")
    try:
        print(run(args.size_mib << 20, args.runs, workdir, args.files))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
