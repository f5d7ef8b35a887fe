"""What Nextcloud clients need besides plain WebDAV: OCS core endpoints, stable file IDs,
folder ETags that follow deep changes, the oc:/nc: properties, PUT headers."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
import zlib

import pytest
import requests

OC = "{http://owncloud.org/ns}"
NC = "{http://nextcloud.org/ns}"
PROPS_BODY = (
    '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns" '
    'xmlns:nc="http://nextcloud.org/ns"><d:prop><d:getetag/><d:resourcetype/>'
    "<d:getlastmodified/><oc:id/><oc:fileid/><oc:permissions/><oc:size/><oc:checksums/>"
    "<nc:has-preview/></d:prop></d:propfind>")
# Depth 1 is answered by the direct PROPFIND, Depth infinity by WsgiDAV's.
DEPTHS = ["1", "infinity"]


def propfind(server, path: str, depth: str = "1", user: str = "alice") -> dict:
    """href (decoded, without the files prefix) -> {property: text} of 200 properties."""
    r = requests.request("PROPFIND", server.url(user, path), auth=server.auth(user),
                         data=PROPS_BODY, headers={"Depth": depth})
    assert r.status_code == 207, r.text
    out = {}
    prefix = f"/remote.php/dav/files/{user}/"
    for resp in ET.fromstring(r.content).findall("{DAV:}response"):
        href = requests.utils.unquote(resp.findtext("{DAV:}href"))
        props = {}
        for ps in resp.findall("{DAV:}propstat"):
            if "200" in ps.findtext("{DAV:}status"):
                for p in ps.find("{DAV:}prop"):
                    text = p.text if len(p) == 0 else "".join(c.text or "" for c in p.iter())
                    props[p.tag] = text if p.tag != "{DAV:}resourcetype" else (
                        "dir" if len(p) else "file")
        out[href[len(prefix):].rstrip("/")] = props
    return out


def put(server, path: str, data: bytes, user: str = "alice", **headers):
    return requests.put(server.url(user, path), data=data, auth=server.auth(user),
                        headers=headers)


def mkcol(server, path: str, user: str = "alice") -> str:
    r = requests.request("MKCOL", server.url(user, path), auth=server.auth(user))
    assert r.status_code == 201, r.text
    return r.headers["OC-FileId"]


def move(server, src: str, dst: str, method: str = "MOVE", user: str = "alice"):
    r = requests.request(method, server.url(user, src), auth=server.auth(user),
                         headers={"Destination": server.url(user, dst), "Overwrite": "T"})
    assert r.status_code in (201, 204), r.text


# --- OCS core -----------------------------------------------------------------------------


@pytest.mark.parametrize("version,code", [(1, 100), (2, 200)])
def test_capabilities_json(server, version, code):
    r = requests.get(f"{server.base}/ocs/v{version}.php/cloud/capabilities?format=json",
                     headers={"OCS-APIRequest": "true"})
    assert r.status_code == 200
    ocs = r.json()["ocs"]
    assert ocs["meta"]["statuscode"] == code and ocs["meta"]["status"] == "ok"
    caps = ocs["data"]["capabilities"]
    assert caps["dav"]["chunking"] == "1.0"
    assert {"core", "files", "files_sharing"} <= set(caps)
    assert caps["core"]["webdav-root"] == "remote.php/webdav"
    assert ocs["data"]["version"]["major"] >= 20


@pytest.mark.parametrize("version,code", [(1, 100), (2, 200)])
def test_capabilities_xml(server, version, code):
    r = requests.get(f"{server.base}/ocs/v{version}.php/cloud/capabilities")
    assert r.status_code == 200 and "xml" in r.headers["Content-Type"]
    root = ET.fromstring(r.content)
    assert root.findtext("meta/statuscode") == str(code)
    assert root.findtext("data/capabilities/dav/chunking") == "1.0"


@pytest.mark.parametrize("version", [1, 2])
def test_cloud_user(server, version):
    url = f"{server.base}/ocs/v{version}.php/cloud/user?format=json"
    r = requests.get(url, auth=server.auth("alice"), headers={"OCS-APIRequest": "true"})
    assert r.status_code == 200
    data = r.json()["ocs"]["data"]
    assert data["id"] == "alice" and data["display-name"] == "alice"
    assert data["quota"]["used"] >= 0
    # Without the header, or without a valid login: refused, as by Nextcloud.
    r = requests.get(url, auth=server.auth("alice"))
    assert r.status_code == 401 and r.json()["ocs"]["meta"]["statuscode"] == 997 if \
        version == 1 else r.status_code == 401
    r = requests.get(url, auth=("alice", "wrong"), headers={"OCS-APIRequest": "true"})
    assert r.status_code == 401
    assert r.json()["ocs"]["meta"]["status"] == "failure"


def test_placeholders_and_report(server):
    for what in ("trashbin", "versions"):
        r = requests.request("PROPFIND", f"{server.base}/remote.php/dav/{what}/alice/",
                             auth=server.auth("alice"))
        assert r.status_code == 404 and "not kept" in r.text
    body = ('<?xml version="1.0"?><oc:filter-files xmlns:d="DAV:" '
            'xmlns:oc="http://owncloud.org/ns"><oc:filter-rules><oc:favorite>1</oc:favorite>'
            "</oc:filter-rules></oc:filter-files>")
    r = requests.request("REPORT", server.url("alice", ""), auth=server.auth("alice"),
                         data=body)
    assert r.status_code == 207
    assert ET.fromstring(r.content).findall("{DAV:}response") == []
    r = requests.request("REPORT", server.url("alice", ""), auth=("alice", "nope"), data=body)
    assert r.status_code == 401


# --- file IDs -----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", DEPTHS)
def test_file_ids_stable_across_overwrite_and_rename_new_on_copy(server, depth):
    d = f"ids-{depth}"
    mkcol(server, d)
    sub_id = mkcol(server, f"{d}/sub")
    assert put(server, f"{d}/f.txt", b"one").status_code == 201

    def ids():
        found = propfind(server, d, depth)
        if depth == "1":
            for k, v in list(found.items()):
                if k != d and v["{DAV:}resourcetype"] == "dir":
                    found.update(propfind(server, k, depth))
        return {k: (v[OC + "fileid"], v[OC + "id"]) for k, v in found.items()}

    first = ids()
    assert first[f"{d}/sub"][1] == sub_id
    fid, ocid = first[f"{d}/f.txt"]
    assert ocid.startswith(f"{int(fid):08d}") and ocid[8:10] == "oc" and len(ocid) > 10
    assert first[f"{d}/sub"][0] != fid and first[d][0] not in (fid, first[f"{d}/sub"][0])
    assert put(server, f"{d}/f.txt", b"two, longer").status_code == 204
    assert ids()[f"{d}/f.txt"] == (fid, ocid)
    move(server, f"{d}/f.txt", f"{d}/sub/g.txt")
    assert ids()[f"{d}/sub/g.txt"] == (fid, ocid)
    move(server, f"{d}/sub", f"{d}/moved")  # a folder keeps its ID, and so do its members
    after = ids()
    assert after[f"{d}/moved"] == first[f"{d}/sub"] and after[f"{d}/moved/g.txt"] == (fid, ocid)
    move(server, f"{d}/moved/g.txt", f"{d}/copy.txt", method="COPY")
    after = ids()
    assert after[f"{d}/copy.txt"][0] not in (fid, first[d][0], first[f"{d}/sub"][0])
    assert after[f"{d}/moved/g.txt"] == (fid, ocid)
    # Deleted and created again: a different file to a client, so a different ID.
    assert requests.delete(server.url("alice", f"{d}/copy.txt"),
                           auth=server.auth("alice")).status_code == 204
    put(server, f"{d}/copy.txt", b"again")
    assert ids()[f"{d}/copy.txt"] != after[f"{d}/copy.txt"]


@pytest.mark.parametrize("depth", DEPTHS)
def test_properties_for_clients(server, depth):
    d = f"props-{depth}"
    mkcol(server, d)
    mkcol(server, f"{d}/a")
    mkcol(server, f"{d}/a/b")
    put(server, f"{d}/top.bin", b"x" * 10)
    put(server, f"{d}/a/one.bin", b"x" * 100)
    put(server, f"{d}/a/b/two.bin", b"x" * 1000)
    got = propfind(server, d, depth)
    assert got[d][OC + "permissions"] == "RGDNVCK"
    assert got[f"{d}/top.bin"][OC + "permissions"] == "RGDNVW"
    assert got[d][OC + "size"] == "1110"
    assert got[f"{d}/a"][OC + "size"] == "1100"
    assert got[f"{d}/top.bin"][OC + "size"] == "10"
    assert got[f"{d}/top.bin"][NC + "has-preview"] == "false"
    assert got[f"{d}/a"]["{DAV:}getetag"]  # folders have ETags too


def test_folder_etags_change_up_to_the_root(server):
    mkcol(server, "deep")
    mkcol(server, "deep/a")
    mkcol(server, "deep/a/b")
    mkcol(server, "deep/other")
    put(server, "deep/a/b/f.txt", b"1")

    def etags():
        root = propfind(server, "", "0")[""]["{DAV:}getetag"]
        listing = {k: v["{DAV:}getetag"] for k, v in propfind(server, "deep", "1").items()}
        inner = {k: v["{DAV:}getetag"] for k, v in propfind(server, "deep/a", "1").items()}
        return root, listing, inner

    before = etags()
    for change in (lambda: put(server, "deep/a/b/f.txt", b"22"),
                   lambda: put(server, "deep/a/b/new.txt", b"n"),
                   lambda: move(server, "deep/a/b/new.txt", "deep/a/b/renamed.txt"),
                   lambda: requests.delete(server.url("alice", "deep/a/b/renamed.txt"),
                                           auth=server.auth("alice"))):
        change()
        after = etags()
        assert after[0] != before[0]  # the user's root
        assert after[1]["deep"] != before[1]["deep"]
        assert after[1]["deep/a"] != before[1]["deep/a"]
        assert after[2]["deep/a/b"] != before[2]["deep/a/b"]
        assert after[1]["deep/other"] == before[1]["deep/other"]  # unrelated: unchanged
        before = after


# --- PUT ------------------------------------------------------------------------------------


def _checksum(kind: str, data: bytes) -> str:
    if kind == "ADLER32":
        return f"ADLER32:{zlib.adler32(data):08x}"
    return f"{kind}:{hashlib.new(kind.lower(), data).hexdigest()}"


# The second, conditional PUT takes WsgiDAV's path, the first the direct one.
@pytest.mark.parametrize("kind", ["SHA1", "MD5", "ADLER32"])
def test_put_headers_and_checksums(server, kind):
    path = f"put-{kind}.txt"
    data = b"checksummed " * 100
    r = put(server, path, data, **{"OC-Checksum": _checksum(kind, data),
                                   "X-OC-Mtime": "1600000000"})
    assert r.status_code == 201, r.text
    assert r.headers["X-OC-MTime"] == "accepted"
    props = propfind(server, path, "0")[path]
    assert r.headers["OC-ETag"] == r.headers["ETag"]
    assert r.headers["ETag"].strip('"') == props["{DAV:}getetag"].strip('"')
    assert r.headers["OC-FileId"] == props[OC + "id"]
    assert props["{DAV:}getlastmodified"] == "Sun, 13 Sep 2020 12:26:40 GMT"
    assert props[OC + "checksums"] == _checksum(kind, data)

    new = b"second version"
    r2 = put(server, path, new, **{"If-Match": r.headers["ETag"],
                                   "OC-Checksum": _checksum(kind, new)})
    assert r2.status_code == 204, r2.text
    props = propfind(server, path, "0")[path]
    assert r2.headers["ETag"].strip('"') == props["{DAV:}getetag"].strip('"')
    assert r2.headers["OC-FileId"] == r.headers["OC-FileId"]
    assert props[OC + "checksums"] == _checksum(kind, new)
    # A stale If-Match: 412, nothing changes.
    r3 = put(server, path, b"lost", **{"If-Match": r.headers["ETag"]})
    assert r3.status_code == 412
    # No checksum: the old one no longer describes the file and goes.
    assert put(server, path, b"plain").status_code == 204
    assert OC + "checksums" not in propfind(server, path, "0")[path]


@pytest.mark.parametrize("conditional", [False, True], ids=["direct", "wsgidav"])
def test_put_with_wrong_checksum_stores_nothing(server, conditional):
    path = f"bad-sum-{conditional}.txt"
    r = put(server, path, b"original")
    headers = {"OC-Checksum": _checksum("SHA1", b"something else")}
    if conditional:
        headers["If-Match"] = r.headers["ETag"]
    r2 = put(server, path, b"corrupted in transit", **headers)
    assert r2.status_code == 400 and "checksum" in r2.text
    got = requests.get(server.url("alice", path), auth=server.auth("alice"))
    assert got.content == b"original" and got.headers["ETag"] == r.headers["ETag"]
    r3 = put(server, f"new-{path}", b"x", **headers)
    assert r3.status_code == 400
    assert requests.get(server.url("alice", f"new-{path}"),
                        auth=server.auth("alice")).status_code == 404
