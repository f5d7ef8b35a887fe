"""Nextcloud's sharing properties in PROPFIND: oc:share-types, oc:owner-id,
oc:owner-display-name and oc:permissions with the caller's effective permissions.

WsgiDAV's PROPFIND asks :func:`value` per resource; the direct PROPFIND (dav.propfind)
asks :func:`listing_columns` once per listing, which gives the same values from one query
for the share types of all entries, one user lookup per owner and the permission letters
of the listing's resolved share target (every entry of a folder inside a mount has the
mount's permissions; mount points in a folder of one's own have their share's).
"""

from __future__ import annotations

import functools
from xml.sax.saxutils import escape

from davserver.dav import propcols
from davserver.dav.propcols import Column
from davserver.vault import shares as sh

OC = "http://owncloud.org/ns"
SHARE_TYPES = f"{{{OC}}}share-types"
OWNER_ID = f"{{{OC}}}owner-id"
OWNER_DISPLAY_NAME = f"{{{OC}}}owner-display-name"
PERMISSIONS = f"{{{OC}}}permissions"
NAMES = {SHARE_TYPES, OWNER_ID, OWNER_DISPLAY_NAME, PERMISSIONS}


@functools.lru_cache(maxsize=512)
def permission_letters(bits: int, *, is_dir: bool, shared: bool, mount_root: bool) -> str:
    """Nextcloud's letters: S shared with me, R re-shareable, M mount point, G readable,
    D deletable, N renamable, V movable, W writable file, C/K create file/folder."""
    out = ""
    if shared:
        out += "S"
    if bits & sh.SHARE:
        out += "R"
    if mount_root:
        out += "M"
    if bits & sh.READ:
        out += "G"
    if bits & sh.DELETE or mount_root:
        out += "D"  # a mount point can always be removed from one's own tree
    if bits & sh.UPDATE or mount_root:
        out += "NV"
    if is_dir:
        if bits & sh.CREATE:
            out += "CK"
    elif bits & sh.UPDATE:
        out += "W"
    return out


def value(res, name: str) -> str | None:
    """The property as XML text, or None when ``name`` is not one of ours."""
    if name not in NAMES:
        return None
    provider = res.provider
    inst = provider.instance
    spath = res.spath
    owner = spath.split("/", 1)[0]
    local = name.split("}", 1)[1]
    tag = f'<oc:{local} xmlns:oc="{OC}">'
    if local == "owner-id":
        return f"{tag}{escape(owner)}</oc:{local}>"
    if local == "owner-display-name":
        return f"{tag}{escape(display_name(inst.users, owner))}</oc:{local}>"
    if local == "share-types":
        types = sorted({s.share_type for s in inst.shares.shares_of_node(spath)})
        return tag + "".join(f"<oc:share-type>{t}</oc:share-type>" for t in types) + \
            f"</oc:{local}>"
    user = res.environ.get("wsgidav.auth.user_name") or ""
    _owner, rel = provider._split(res.path, res.environ)
    target = inst.shares.resolve(user, rel)
    bits = target.permissions
    if not res.is_collection and target.mount is not None:
        bits &= sh.FILE_MASK
    letters = permission_letters(bits, is_dir=res.is_collection,
                                 shared=target.mount is not None,
                                 mount_root=target.is_mount_root)
    return f"{tag}{letters}</oc:{local}>"


def display_name(users, owner: str) -> str:
    rec = users.get(owner)
    return rec.display_name if rec and rec.display_name else owner


def _letters(target: sh.Target, is_dir: bool) -> str:
    bits = target.permissions
    if not is_dir and target.mount is not None:
        bits &= sh.FILE_MASK
    return permission_letters(bits, is_dir=is_dir, shared=target.mount is not None,
                              mount_root=target.is_mount_root)


def listing_columns(shares: sh.ShareService, users, user: str, names, target: sh.Target,
                    nodes: list, members: dict[str, sh.Target] | None,
                    folder: str | None) -> dict[str, Column]:
    """property -> Column of the sharing ``names`` asked for, for a PROPFIND of ``nodes``
    (the target first, then its members when ``members`` is not None).

    ``target``: what the request path resolved to; ``members``: node name -> Target of
    the mount points listed in the folder (the other members are the folder's own, or
    inside the same mount); ``folder``: the storage path whose members are listed.
    Inner XML uses the prefix ``oc`` that dav.propfind binds in its multistatus element.
    """
    wanted = [n for n in names if n in NAMES]
    if not wanted or not nodes:
        return {}
    out: dict[str, Column] = {}
    if OWNER_ID in wanted or OWNER_DISPLAY_NAME in wanted:
        owners = {n.path: n.path.partition("/")[0] for n in nodes}
        names_of = {o: None for o in owners.values()}
        if OWNER_ID in wanted:
            out[OWNER_ID] = _by_owner(owners, {o: escape(o) for o in names_of})
        if OWNER_DISPLAY_NAME in wanted:
            out[OWNER_DISPLAY_NAME] = _by_owner(
                owners, {o: escape(display_name(users, o)) for o in names_of})
    if SHARE_TYPES in wanted:
        types = shares.share_types(folder if members is not None else None,
                                   [n.path for n in nodes])
        out[SHARE_TYPES] = propcols.Column("", "", {
            path: "".join(f"<oc:share-type>{t}</oc:share-type>" for t in found)
            for path, found in types.items() if found})
    if PERMISSIONS in wanted:
        inside = (sh.Target("", target.permissions, target.mount)
                  if target.mount is not None else sh.Target("", sh.ALL))
        own = {nodes[0].path: _letters(target, nodes[0].is_dir)}
        if members:
            own.update((n.path, _letters(members[n.name], n.is_dir))
                       for n in nodes[1:] if n.name in members)
        out[PERMISSIONS] = propcols.Column(_letters(inside, False), _letters(inside, True),
                                           own)
    return out


def _by_owner(owners: dict[str, str], text: dict[str, str]) -> Column:
    """One value when every entry has one owner (the usual listing), else per entry."""
    if len(text) == 1:
        return propcols.same(next(iter(text.values())))
    return propcols.each({path: text[o] for path, o in owners.items()})
