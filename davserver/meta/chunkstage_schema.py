"""Tables of chunked uploads written in place (davserver/vault/chunkstage.py): one row
per upload (its file ID, the highest stream-chunk index a chunk PUT may have sealed,
whether a MOVE began sealing), one per chunk placed in its ``.data`` file (where, its
edge bytes sealed, and the boot whose page cache may still hold its bytes unflushed)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunk_stages(
    folder TEXT PRIMARY KEY,
    file_id TEXT NOT NULL,
    sealed_upto INTEGER NOT NULL,
    moved INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunk_stage_parts(
    folder TEXT NOT NULL,
    chunk INTEGER NOT NULL,
    name TEXT NOT NULL,
    start INTEGER NOT NULL,
    size INTEGER NOT NULL,
    head INTEGER NOT NULL,
    edges TEXT NOT NULL,
    boot TEXT NOT NULL,
    PRIMARY KEY (folder, chunk)
);
"""
