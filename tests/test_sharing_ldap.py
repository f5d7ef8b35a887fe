"""Shares with directory (LDAP) groups against the real slapd fixture: membership changes
in the directory change access within the cache interval, without a restart; in user-key
mode a member who joined in the directory gets the share key wrap (one wrap)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import ldap3
import pytest
import requests

from tests.browser import ldap_config
from tests.conftest_ldap import unique

CACHE_SECONDS = 1


def _set_members(slapd, group_dn: str, uids: list[str]) -> None:
    conn = slapd._admin()
    try:
        conn.modify(group_dn, {"member": [(ldap3.MODIFY_REPLACE,
                                           [slapd.user_dn(u) for u in uids])]})
        assert conn.result["result"] == 0, conn.result
    finally:
        conn.unbind()


def _eventually(check, timeout: float = 10.0) -> None:
    """Directory answers are cached CACHE_SECONDS: wait for the change to show."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the change never took effect"
        time.sleep(0.2)


def test_ldap_group_share_follows_directory_membership(server_factory, slapd):
    srv = server_factory(users={"alice": None}, config=ldap_config(
        slapd, group_base=slapd.groups_dn, cache_seconds=CACHE_SECONDS))
    srv.run_cli("encryption:disable-master-key", "--yes")
    srv.restart()
    m1, m2 = unique("mem"), unique("mem")
    pw = {m1: "pw-" + m1, m2: "pw-" + m2}
    for uid in (m1, m2):
        slapd.add_user(uid, pw[uid])
    group = unique("grp")
    group_dn = slapd.add_group(group, [m1])

    a = srv.session("alice")
    assert a.request("MKCOL", srv.url("alice", "dept")).status_code == 201
    assert a.put(srv.url("alice", "dept/memo.txt"), data=b"for the group").status_code == 201
    out = srv.run_cli("share:add", "alice", "dept", "--group", group, "--output", "json")
    share = json.loads(out.stdout)
    groups = json.loads(srv.run_cli("group:list", "--output", "json").stdout)
    assert groups[group] == [m1]
    refused = srv.run_cli("group:adduser", group, m2, check=False)
    assert refused.returncode != 0 and "managed by the directory" in refused.stderr

    def get(uid):
        return requests.get(srv.url(uid, "dept/memo.txt"), auth=(uid, pw[uid]), timeout=30)

    first = get(m1)  # m1's first login makes their key pair; alice online makes the wrap
    a.request("PROPFIND", srv.url("alice"), headers={"Depth": "0"})
    r = get(m1)
    assert r.status_code == 200 and r.content == b"for the group", (first.text, r.text)
    assert get(m2).status_code == 404
    get(m2)  # m2 logs in once (key pair made) while not yet a member

    _set_members(slapd, group_dn, [m1, m2])
    _eventually(lambda: get(m2).status_code != 404)  # m2 now sees it; wrap pending
    a.request("PROPFIND", srv.url("alice"), headers={"Depth": "0"})  # a holder is online
    _eventually(lambda: get(m2).status_code == 200)
    assert get(m2).content == b"for the group"
    keys = srv.run_cli("share:list", "--output", "json").stdout
    assert json.loads(keys)[0]["pending"] == [] and json.loads(keys)[0]["id"] == share["id"]

    _set_members(slapd, group_dn, [m2])
    _eventually(lambda: get(m1).status_code == 404)
    assert get(m2).status_code == 200

    # m1's wraps of the share key go too (no event from the directory: checked at
    # requests, at most once per cache interval), and the key is rotated.
    def wraps() -> list[set[str]]:
        d = Path(srv.data_dir) / "keys" / "shares" / str(share["id"])
        return [{w["to"] for w in json.loads(f.read_text())["wraps"]}
                for f in sorted(d.iterdir())]

    def m1_gone() -> bool:
        a.request("PROPFIND", srv.url("alice"), headers={"Depth": "0"})
        return not any(w.startswith(f"user:{m1}:") for v in wraps() for w in v)

    _eventually(m1_gone)
    assert len(wraps()) == 2 and any(w.startswith(f"user:{m2}:") for w in wraps()[-1])


@pytest.mark.parametrize("kind", ["groupOfNames", "groupOfUniqueNames", "posixGroup"])
def test_directory_group_kinds(slapd, kind):
    """The three usual group shapes resolve to the same logins, both ways."""
    from davserver.auth.ldap import LdapConfig, LdapDirectory
    from davserver.auth.ldap_groups import LdapGroups
    from tests.browser import ldap_section

    uids = [unique("k"), unique("k")]
    for uid in uids:
        slapd.add_user(uid, "pw-" + uid)
    cn = unique(kind.lower())
    attr, attrs = {
        "groupOfNames": ("member", {"member": [slapd.user_dn(u) for u in uids]}),
        "groupOfUniqueNames": ("uniqueMember",
                               {"uniqueMember": [slapd.user_dn(u) for u in uids]}),
        "posixGroup": ("memberUid", {"memberUid": uids, "gidNumber": "4242"}),
    }[kind]
    conn = slapd._admin()
    try:
        conn.add(slapd.group_dn(cn), [kind], {"cn": cn, **attrs})
        assert conn.result["result"] == 0, conn.result
    finally:
        conn.unbind()
    directory = LdapDirectory(LdapConfig.from_mapping(ldap_section(
        slapd, group_base=slapd.groups_dn, group_filter=f"(objectClass={kind})",
        group_member_attribute=attr)))
    groups = LdapGroups(directory)
    assert groups.exists(cn) and not groups.exists(cn + "-missing")
    assert groups.members(cn) == sorted(uids)
    assert cn in groups.groups_of(uids[0])
    assert cn in groups.names()
