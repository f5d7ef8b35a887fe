"""The Nextcloud properties sync clients read in a PROPFIND: oc:id, oc:fileid,
oc:permissions, oc:size, nc:has-preview (oc:checksums is stored as a dead property by
the PUT layer, dav.nc_put, so it moves, copies and goes away with the file).

Both PROPFIND paths (dav.propfind for listings, the WsgiDAV resources for the rest) take
their values from here. A listing costs at most three queries whatever its length: IDs of
the folder and its members, IDs assigned to members that had none, and folder sizes.
"""

from __future__ import annotations

import secrets
import string
import weakref

from davserver.dav import propcols
from davserver.dav.propcols import Column
from davserver.meta.db import MetaDB

OC = "http://owncloud.org/ns"
NC = "http://nextcloud.org/ns"
OC_ID = f"{{{OC}}}id"
OC_FILEID = f"{{{OC}}}fileid"
OC_PERMISSIONS = f"{{{OC}}}permissions"
OC_SIZE = f"{{{OC}}}size"
OC_CHECKSUMS = f"{{{OC}}}checksums"
NC_HAS_PREVIEW = f"{{{NC}}}has-preview"

#: Properties computed here (not stored).
NAMES = frozenset((OC_ID, OC_FILEID, OC_PERMISSIONS, OC_SIZE, NC_HAS_PREVIEW))

_INSTANCE_KEY = "nextcloud.instance_id"
_ID_ALPHABET = string.ascii_lowercase + string.digits


_known_instance_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # MetaDB -> ID


def instance_id(db: MetaDB) -> str:
    """Nextcloud's instance ID ('oc' + 10 characters): the suffix of every oc:id, so IDs
    from two servers never collide in a client that syncs with both. Set once, so a
    process keeps it after the first read (every PUT answer names it)."""
    value = _known_instance_ids.get(db)
    if value is not None:
        return value
    value = db.get_setting(_INSTANCE_KEY)
    if value is None:
        candidate = "oc" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))
        with db.tx() as c:
            c.execute("INSERT INTO settings(key, value) VALUES(?, ?) ON CONFLICT DO NOTHING",
                      (_INSTANCE_KEY, candidate))
        value = db.get_setting(_INSTANCE_KEY)
    _known_instance_ids[db] = value
    return value


def oc_id(file_id: int, instance: str) -> str:
    return f"{file_id:08d}{instance}"


def permissions_for(user: str, spath: str, is_dir: bool) -> str:
    """oc:permissions of ``spath`` for ``user``: R share, G read, D delete, N rename,
    V move, W write (files), C create files and K folders (folders). Owners may do
    everything in their home; sharing extends this for items shared with someone."""
    return "RGDNVCK" if is_dir else "RGDNVW"


def ids_for(db: MetaDB, paths: list[str], parent: str | None = None) -> dict[str, int]:
    """Stable IDs of ``paths``, assigning new ones where missing. ``parent``: all paths
    except ``parent`` itself are its members (one indexed query for a whole listing)."""
    if parent is not None:
        rows = db.query("SELECT path, id FROM nc_fileids WHERE path = ? OR parent = ?",
                        (parent, parent))
    elif len(paths) == 1:
        rows = db.query("SELECT path, id FROM nc_fileids WHERE path = ?", (paths[0],))
    else:
        marks = ",".join("?" * len(paths))
        rows = db.query(f"SELECT path, id FROM nc_fileids WHERE path IN ({marks})", paths)
    ids = dict(rows)
    missing = [p for p in paths if p not in ids]
    if missing:
        with db.tx() as c:
            c.executemany("INSERT INTO nc_fileids(path, parent) VALUES(?, ?) "
                          "ON CONFLICT DO NOTHING",
                          [(p, p.rpartition("/")[0]) for p in missing])
            for i in range(0, len(missing), 500):
                batch = missing[i:i + 500]
                ids.update(c.execute(
                    f"SELECT path, id FROM nc_fileids WHERE path IN "
                    f"({','.join('?' * len(batch))})", batch).fetchall())
    return ids


def folder_sizes(db: MetaDB, folder: str, members: bool) -> dict[str, int]:
    """Recursive plaintext sizes: of ``folder``, and with ``members`` of every folder in
    it, from one pass over the index below ``folder``."""
    n = len(folder) + 2  # position of the first character below "folder/"
    rows = db.query(
        # Casts: PostgreSQL has no substr(text, smallint, bigint) (instr is BIGINT there).
        "SELECT substr(path, CAST(? AS INTEGER), CAST(instr(substr(path, CAST(? AS INTEGER)), "
        "'/') - 1 AS INTEGER)), sum(size) FROM files WHERE substr(path, 1, length(?) + 1) = "
        "? || '/' AND instr(substr(path, CAST(? AS INTEGER)), '/') > 0 GROUP BY 1",
        (n, n, folder, folder, n)) if members else []
    out = {f"{folder}/{name}": int(total) for name, total in rows}
    total = db.query("SELECT coalesce(sum(size), 0) FROM files WHERE "
                     "substr(path, 1, length(?) + 1) = ? || '/'", (folder, folder))
    out[folder] = int(total[0][0])
    return out


def columns(db: MetaDB, user: str, names, nodes: list, listing: bool) -> dict[str, Column]:
    """property -> Column over ``nodes`` for the computed ``names`` asked for (digits,
    letters and the instance ID: nothing to escape, so dav.propfind writes them as is).
    ``nodes``: vault Nodes, the first the target, the rest its members (``listing``)."""
    wanted = [n for n in names if n in NAMES]
    if not wanted or not nodes:
        return {}
    out: dict[str, Column] = {}
    if OC_ID in wanted or OC_FILEID in wanted:
        ids = ids_for(db, [n.path for n in nodes], nodes[0].path if listing else None)
        inst = instance_id(db)
        if OC_FILEID in wanted:
            out[OC_FILEID] = propcols.each({p: str(fid) for p, fid in ids.items()})
        if OC_ID in wanted:
            out[OC_ID] = propcols.each({p: f"{fid:08d}{inst}" for p, fid in ids.items()})
    if OC_PERMISSIONS in wanted:
        out[OC_PERMISSIONS] = propcols.Column(permissions_for(user, "", False),
                                              permissions_for(user, "", True))
    if OC_SIZE in wanted:
        sizes = folder_sizes(db, nodes[0].path, listing) if nodes[0].is_dir else {}
        top = nodes[0].path
        text: dict[str, str] = {}
        for n in nodes:
            if not n.is_dir:
                text[n.path] = str(n.size)
            else:
                if n.path not in sizes and n.path.rpartition("/")[0] != top:
                    # Not below the listed folder: a share mounted in it (another tree).
                    sizes.update(folder_sizes(db, n.path, False))
                text[n.path] = str(sizes.get(n.path, 0))
        out[OC_SIZE] = propcols.each(text)
    if NC_HAS_PREVIEW in wanted:
        out[NC_HAS_PREVIEW] = propcols.same("false")
    return out


def values(db: MetaDB, user: str, names, nodes: list, listing: bool) -> dict[str, dict]:
    """path -> {property: inner XML text}: :func:`columns` per entry."""
    return propcols.rows(columns(db, user, names, nodes, listing), nodes)


def file_id_of(db: MetaDB, spath: str) -> tuple[int, str]:
    """(oc:fileid, oc:id) of one path, for PUT and MOVE answers (OC-FileId)."""
    fid = ids_for(db, [spath])[spath]
    return fid, oc_id(fid, instance_id(db))
