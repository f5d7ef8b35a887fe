"""Nextcloud's sharing properties in PROPFIND: oc:share-types, oc:owner-id,
oc:owner-display-name and oc:permissions with the caller's effective permissions.

Computed from the share service per resource; WsgiDAV's PROPFIND asks for them (the
direct PROPFIND leaves requests naming them to WsgiDAV).
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from davserver.vault import shares as sh

OC = "http://owncloud.org/ns"
NAMES = {f"{{{OC}}}share-types", f"{{{OC}}}owner-id", f"{{{OC}}}owner-display-name",
         f"{{{OC}}}permissions"}


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
        rec = inst.users.get(owner)
        return f"{tag}{escape(rec.display_name if rec and rec.display_name else owner)}" \
               f"</oc:{local}>"
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
