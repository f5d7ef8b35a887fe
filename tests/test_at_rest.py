"""Nothing a user uploads appears in plaintext anywhere under the data directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

MiB = 1024 * 1024


def test_no_plaintext_at_rest(server_factory):
    srv = server_factory(users={"alice": None, "bob": None})
    markers: list[bytes] = []
    uploads: dict[tuple[str, str], bytes] = {}

    def marker() -> bytes:
        m = b"PLAINTEXT-MARKER-" + os.urandom(12).hex().encode()
        markers.append(m)
        return m

    # small files of repeated markers, one per size class
    for i, n in enumerate((1, 10, 1000, 30000)):
        uploads[("alice", f"small{i}.txt")] = marker() * n
    uploads[("bob", "bob.txt")] = marker() * 500
    # 3 MiB of random data with a distinct marker every 64 KiB
    big = bytearray(os.urandom(3 * MiB))
    for off in range(0, len(big), 64 * 1024):
        m = marker()
        big[off:off + len(m)] = m
    uploads[("alice", "dir/big.bin")] = bytes(big)
    # a text file with the marker on a line of its own
    uploads[("alice", "dir/notes.md")] = b"# notes\n" + marker() + b"\n" * 100

    sessions = {u: srv.session(u) for u in ("alice", "bob")}
    assert sessions["alice"].request("MKCOL", srv.url("alice", "dir")).status_code == 201
    for (user, name), data in uploads.items():
        r = sessions[user].put(srv.url(user, name), data=data)
        assert r.status_code == 201, r.text
    # a copy and an overwrite go through other code paths
    r = sessions["alice"].request("COPY", srv.url("alice", "small3.txt"),
                                  headers={"Destination": srv.url("alice", "copy.txt")})
    assert r.status_code == 201
    overwrite = marker() * 100
    assert sessions["alice"].put(srv.url("alice", "small0.txt"),
                                 data=overwrite).status_code == 204
    uploads[("alice", "small0.txt")] = overwrite
    # everything reads back
    for (user, name), data in uploads.items():
        assert sessions[user].get(srv.url(user, name)).content == data

    needles = list(markers)
    needles += [data[:32] for data in uploads.values() if len(data) >= 32]
    needles += [m.hex().encode() for m in markers[:5]]  # hex-dumped plaintext, e.g. in logs
    data_dir = Path(srv.data_dir)

    def scan() -> list[str]:
        hits = []
        scanned = 0
        for p in data_dir.rglob("*"):
            if not p.is_file():
                continue
            blob = p.read_bytes()
            scanned += 1
            for n in needles:
                if n in blob:
                    hits.append(f"{p.relative_to(data_dir)} contains {n[:40]!r}")
                    break
        assert scanned >= len(uploads) + 2, f"only {scanned} files under {data_dir}"
        return hits

    # while running (WAL not checkpointed) and after a clean stop
    hits = scan()
    assert not hits, "\n".join(hits)
    srv.stop()
    hits = scan()
    assert not hits, "\n".join(hits)
    # the server log must not contain contents either
    log = srv.log_path.read_bytes()
    assert not any(m in log for m in markers)


def test_secret_file_private_and_outside_data_dir(server):
    from davserver import config as config_mod

    cfg = config_mod.load(server.config, server.data_dir)
    secret = Path(cfg.secret_file).resolve()
    data_dir = Path(server.data_dir).resolve()
    assert secret.is_file()
    assert secret == Path(server.config).resolve().parent / "secret"
    assert data_dir not in secret.parents, f"{secret} is inside {data_dir}"
    mode = stat.S_IMODE(secret.stat().st_mode)
    assert mode == 0o600, oct(mode)
    # no copy of the secret under the data directory
    text = secret.read_bytes().strip().split(b":", 1)[-1]  # the base64 key material
    assert len(text) >= 40
    for p in data_dir.rglob("*"):
        if p.is_file():
            assert text not in p.read_bytes(), f"secret copied into {p}"
