"""Values of a computed property over one PROPFIND listing, as a column.

Most computed properties are the same for every file (or every folder) of a listing:
oc:permissions of one's own files, nc:has-preview, the owner. A column says so once
instead of holding 10,000 equal strings, and the direct PROPFIND (dav.propfind) writes
such a value into its per-listing renderer as fixed text; only values that differ per
entry (oc:fileid, oc:size, the share types of the few shared entries) are looked up.
"""

from __future__ import annotations

from typing import NamedTuple


class Column(NamedTuple):
    """``by_path``: storage path -> inner XML for entries with their own value; every
    other entry takes ``file`` or ``folder``."""

    file: str
    folder: str
    by_path: dict[str, str] | None = None

    def of(self, path: str, is_dir: bool) -> str:
        if self.by_path is not None:
            v = self.by_path.get(path)
            if v is not None:
                return v
        return self.folder if is_dir else self.file


def same(text: str) -> Column:
    """One value for every entry."""
    return Column(text, text)


def each(values: dict[str, str]) -> Column:
    """A value per entry (``values`` holds every path of the listing)."""
    return Column("", "", values)


def rows(columns: dict[str, Column], nodes) -> dict[str, dict[str, str]]:
    """path -> {property: inner XML}: the columns read back per entry (one resource
    asked through WsgiDAV)."""
    return {n.path: {name: c.of(n.path, n.is_dir) for name, c in columns.items()}
            for n in nodes}
