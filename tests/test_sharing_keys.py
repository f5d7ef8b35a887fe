"""Sharing in user-key mode over real HTTP: share keys, pending wraps, removal, rotation,
offline recovery. The key store is inspected directly, as an operator would."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from davserver.crypto import keywrap
from davserver.errors import KeyNotFound
from davserver.vault.keystore import KeyStore, parse_key_file
from davserver.vault.sharekeys import ShareKeys
from davserver.vault.userkeys import UserKeys
from tests.live import LiveServer

RECOVERY_PASS = "recovery-pass-123"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = LiveServer(tmp_path_factory.mktemp("sharekeys"),
                   {"alice": None, "bob": None, "carol": None, "dave": None},
                   config={"encryption": {"kdf_time_cost": 1, "kdf_memory_kib": 1024,
                                          "kdf_parallelism": 1}})
    s.create()
    s.run_cli("encryption:disable-master-key", "--yes")
    s.run_cli("encryption:enable-recovery", env={"DAVSERVER_RECOVERY_PASS": RECOVERY_PASS})
    s.start()
    a = s.session("alice")
    assert a.request("MKCOL", s.url("alice", "proj")).status_code == 201
    for i in range(3):
        assert a.put(s.url("alice", f"proj/f{i}.txt"), data=b"secret %d" % i).status_code == 201
    try:
        yield s
    finally:
        s.stop()


def cli_json(srv: LiveServer, *args: str, env: dict | None = None):
    return json.loads(srv.run_cli(*args, "--output", "json", env=env).stdout)


def key_root(srv: LiveServer) -> Path:
    return Path(srv.data_dir) / "keys"


def share_key_wraps(srv: LiveServer, share_id: int) -> dict[int, set[str]]:
    d = key_root(srv) / "shares" / str(share_id)
    if not d.exists():
        return {}
    out = {}
    for f in sorted(d.iterdir()):
        doc = json.loads(f.read_text())
        out[doc["version"]] = {w["to"] for w in doc["wraps"]}
    return out


def file_wraps(srv: LiveServer, owner_rel: str) -> set[str]:
    """Recipients in the key file of a stored file (file ID from its header)."""
    with open(Path(srv.data_dir) / "files" / owner_rel, "rb") as f:
        from davserver.crypto import header

        fid = header.parse(f.read(header.HEADER_BYTES)).file_id
    raw = (key_root(srv) / "files" / fid.hex()[:2] / f"{fid.hex()}.json").read_bytes()
    return {w.recipient for w in parse_key_file(raw, fid)}  # appended wraps included


def test_pending_member_gets_wrap_when_owner_is_online(srv):
    share = cli_json(srv, "share:add", "alice", "proj", "--user", "bob",
                     "--permissions", "all")
    listed = {s["id"]: s for s in cli_json(srv, "share:list")}
    assert listed[share["id"]]["pending"] == ["bob"]  # bob never logged in: no key pair
    b = srv.session("bob")
    b.request("PROPFIND", srv.url("bob"), headers={"Depth": "0"})  # first login: key made
    # alice is online (her sync client polls): the wrap for bob is made, without asking.
    assert srv.session("alice").request("PROPFIND", srv.url("alice"),
                                        headers={"Depth": "0"}).status_code == 207
    for i in range(3):
        r = b.get(srv.url("bob", f"proj/f{i}.txt"))
        assert r.status_code == 200 and r.content == b"secret %d" % i
    assert cli_json(srv, "share:list")[0]["pending"] == []
    wraps = share_key_wraps(srv, share["id"])
    assert any(w.startswith("user:bob:") for w in wraps[1])
    assert any(w.startswith("user:alice:") for w in wraps[1])
    assert any(w.startswith("recovery:") for w in wraps[1])
    # Each file's data key: owner + share key, one wrap each (no per-member wraps).
    assert {w.split(":")[0] for w in file_wraps(srv, "alice/proj/f0.txt")} == {"user", "share"}
    # bob writes into the share: alice reads the same bytes.
    assert b.put(srv.url("bob", "proj/by-bob.bin"), data=b"\x00bob\xff" * 1000).status_code == 201
    assert srv.session("alice").get(srv.url("alice", "proj/by-bob.bin")).content == \
        b"\x00bob\xff" * 1000


def test_recovery_admin_as_only_holder_online(srv):
    a = srv.session("alice")
    assert a.request("MKCOL", srv.url("alice", "solo")).status_code == 201
    assert a.put(srv.url("alice", "solo/s.txt"), data=b"solo data").status_code == 201
    srv.run_cli("encryption:user-recovery", "alice", "--enable",
                env={"DAVSERVER_PASS": srv.users["alice"]})
    srv.restart()  # nobody's key is unlocked in the server any more: alice is offline
    share = cli_json(srv, "share:add", "alice", "solo", "--user", "carol")
    c = srv.session("carol")
    c.request("PROPFIND", srv.url("carol"), headers={"Depth": "0"})  # carol's key pair
    r = c.get(srv.url("carol", "solo/s.txt"))  # nobody could make the wrap yet
    assert r.status_code == 403 and "not ready yet" in r.text
    assert cli_json(srv, "share:list", "--user", "carol")[0]["pending"] == ["carol"]
    out = cli_json(srv, "share:wrap-pending", "--recovery-password-from-env",
                   env={"DAVSERVER_RECOVERY_PASS": RECOVERY_PASS})
    assert out["still_pending"] == 0 and out["wraps_made"] >= 2
    r = c.get(srv.url("carol", "solo/s.txt"))
    assert r.status_code == 200 and r.content == b"solo data"
    assert any(w.startswith("user:carol:") for w in share_key_wraps(srv, share["id"])[1])


def _old_share_keys(srv: LiveServer, user: str, share_id: int):
    """What a member could have kept: their unwrapped share key(s), read from the store
    with their password (an in-process look, as a malicious member with a copy would)."""
    store = KeyStore(str(key_root(srv)), fsync=False)
    me = UserKeys(store).open_existing(user, srv.users[user])
    return ShareKeys(store, None).open(share_id, [me])


def test_group_removal_deletes_wraps_and_rotates(srv):
    srv.run_cli("group:add", "crew")
    srv.run_cli("group:adduser", "crew", "dave")
    a = srv.session("alice")
    assert a.request("MKCOL", srv.url("alice", "crew")).status_code == 201
    assert a.put(srv.url("alice", "crew/old.txt"), data=b"before removal").status_code == 201
    share = cli_json(srv, "share:add", "alice", "crew", "--group", "crew",
                     "--permissions", "read,update,create")
    d = srv.session("dave")
    d.request("PROPFIND", srv.url("dave"), headers={"Depth": "0"})
    a.request("PROPFIND", srv.url("alice"), headers={"Depth": "0"})  # alice online
    assert d.get(srv.url("dave", "crew/old.txt")).content == b"before removal"
    kept = _old_share_keys(srv, "dave", share["id"])
    assert [k.recipient for k in kept] == [f"share:{share['id']}:v1"]

    srv.run_cli("group:removeuser", "crew", "dave")
    wraps = share_key_wraps(srv, share["id"])
    assert sorted(wraps) == [1, 2]  # lazily rotated: v2 for new writes
    assert not any(w.startswith("user:dave:") for v in wraps.values() for w in v)
    assert d.get(srv.url("dave", "crew/old.txt")).status_code == 404

    assert a.put(srv.url("alice", "crew/new.txt"), data=b"after removal").status_code == 201
    new_wraps = file_wraps(srv, "alice/crew/new.txt")
    assert f"share:{share['id']}:v2" in new_wraps
    assert f"share:{share['id']}:v1" not in new_wraps
    store = KeyStore(str(key_root(srv)), fsync=False)
    with open(Path(srv.data_dir) / "files/alice/crew/new.txt", "rb") as f:
        from davserver.crypto import header

        fid = header.parse(f.read(header.HEADER_BYTES)).file_id
    with pytest.raises(KeyNotFound):
        store.unwrap(fid, kept)  # dave's kept key does not open new writes
    # What dave could still open: the old file (documented); --reencrypt takes that away.
    with open(Path(srv.data_dir) / "files/alice/crew/old.txt", "rb") as f:
        old_fid = header.parse(f.read(header.HEADER_BYTES)).file_id
    assert len(store.unwrap(old_fid, kept)) == keywrap.DATA_KEY_BYTES
    out = cli_json(srv, "share:rotate", str(share["id"]), "--reencrypt",
                   "--owner-password-from-env", env={"DAVSERVER_PASS": srv.users["alice"]})
    assert out["reencrypted"] >= 1
    with open(Path(srv.data_dir) / "files/alice/crew/old.txt", "rb") as f:
        re_fid = header.parse(f.read(header.HEADER_BYTES)).file_id
    assert re_fid != old_fid
    with pytest.raises(KeyNotFound):
        KeyStore(str(key_root(srv)), fsync=False).unwrap(re_fid, kept)
    assert a.get(srv.url("alice", "crew/old.txt")).content == b"before removal"


def test_unshare_removes_every_wrap(srv):
    a = srv.session("alice")
    assert a.request("MKCOL", srv.url("alice", "brief")).status_code == 201
    assert a.put(srv.url("alice", "brief/x.txt"), data=b"x").status_code == 201
    share = cli_json(srv, "share:add", "alice", "brief", "--user", "bob")
    a.request("PROPFIND", srv.url("alice"), headers={"Depth": "0"})
    assert f"share:{share['id']}:v1" in file_wraps(srv, "alice/brief/x.txt")
    assert srv.session("bob").get(srv.url("bob", "brief/x.txt")).content == b"x"
    srv.run_cli("share:remove", str(share["id"]))
    assert share_key_wraps(srv, share["id"]) == {}
    assert not any(w.startswith("share:") for w in file_wraps(srv, "alice/brief/x.txt"))
    assert srv.session("bob").get(srv.url("bob", "brief/x.txt")).status_code == 404


def test_move_into_and_out_of_share_rewraps_key_only(srv):
    a = srv.session("alice")
    assert a.put(srv.url("alice", "loose.txt"), data=b"loose").status_code == 201
    before = file_wraps(srv, "alice/loose.txt")
    r = a.request("MOVE", srv.url("alice", "loose.txt"),
                  headers={"Destination": srv.url("alice", "proj/loose.txt")})
    assert r.status_code == 201
    inside = file_wraps(srv, "alice/proj/loose.txt")
    assert inside - before == {next(w for w in inside if w.startswith("share:"))}
    assert srv.session("bob").get(srv.url("bob", "proj/loose.txt")).content == b"loose"
    r = a.request("MOVE", srv.url("alice", "proj/loose.txt"),
                  headers={"Destination": srv.url("alice", "loose-again.txt")})
    assert r.status_code == 201
    assert file_wraps(srv, "alice/loose-again.txt") == before
    # A member moves a file out of the share into their own home: it becomes theirs,
    # wrapped for their key (and no longer for alice's or the share's).
    b = srv.session("bob")
    assert b.put(srv.url("bob", "proj/to-take.txt"), data=b"mine now").status_code == 201
    r = b.request("MOVE", srv.url("bob", "proj/to-take.txt"),
                  headers={"Destination": srv.url("bob", "taken.txt")})
    assert r.status_code == 201, r.text
    assert b.get(srv.url("bob", "taken.txt")).content == b"mine now"
    assert {w.split(":")[0] + ":" + w.split(":")[1] for w in file_wraps(
        srv, "bob/taken.txt")} == {"user:bob"}


def test_offline_recover_decrypts_shared_files(srv, tmp_path):
    out = tmp_path / "out"
    res = srv.run_cli("recover", "--data", srv.data_dir, "--keys", str(key_root(srv)),
                      "--user", "alice", "--password-from-env", "--out", str(out),
                      env={"DAVSERVER_PASS": srv.users["alice"]}, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    found = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert any(p.endswith("proj/by-bob.bin") for p in found)  # written by a member
    by_bob = next(p for p in out.rglob("by-bob.bin"))
    assert by_bob.read_bytes() == b"\x00bob\xff" * 1000
    assert os.path.getsize(next(out.rglob("f0.txt"))) == len(b"secret 0")


def test_team_folder_rename_keeps_every_file_readable(srv):
    srv.run_cli("group:add", "keyteam")
    for u in ("bob", "dave"):
        srv.run_cli("group:adduser", "keyteam", u)
    srv.session("bob").request("PROPFIND", srv.url("bob"), headers={"Depth": "0"})
    srv.session("dave").request("PROPFIND", srv.url("dave"), headers={"Depth": "0"})
    fid = srv.run_cli("groupfolder:create", "Vault Team").stdout.strip()
    srv.run_cli("groupfolder:group", fid, "keyteam")
    b, d = srv.session("bob"), srv.session("dave")
    files = {f"doc{i}.txt": os.urandom(1000 + i) for i in range(5)}
    for name, data in files.items():
        assert b.put(srv.url("bob", f"Vault Team/{name}"), data=data).status_code == 201
    wraps = file_wraps(srv, f".gf-{fid}/doc0.txt")
    assert {w.split(":")[0] for w in wraps} == {"share", "recovery"}  # no owner key
    for new_name in ("Renamed Team", "Final"):
        srv.run_cli("groupfolder:rename", fid, new_name)
        for name, data in files.items():
            r = d.get(srv.url("dave", f"{new_name}/{name}"))
            assert r.status_code == 200 and r.content == data
    assert file_wraps(srv, f".gf-{fid}/doc0.txt") == wraps  # keys untouched by renames
