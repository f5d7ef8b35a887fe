"""encrypt-all, decrypt-all and scan over the homes *and* the external storage mounts.

Nextcloud's encrypt-all encrypts every storage that has encryption enabled, and its
decrypt-all decrypts every storage: mounts included. Here each mount has a vault of its
own (vault.mounts), so the jobs run once per vault, with the same convert and check code
as the homes and the same resumability (each file's form is its own checkpoint).

Which mounts: encrypt-all takes the mounts whose ``encrypt`` option is on (a mount kept
plaintext on purpose stays so); decrypt-all takes all of them. With a user named, only
the mounts that apply to that user alone (personal mounts) are touched: a mount several
users see belongs to none of them.
"""

from __future__ import annotations

from davserver.vault import check, convert
from davserver.vault.mounts import Mount, MountedVault

#: (the vault to convert, the storage roots in it): homes, then each mount.
Target = tuple[object, list[str]]


def mounts_for_job(mv: MountedVault, *, encrypt: bool | None,
                   user: str | None) -> list[Mount]:
    """The mounts a conversion (``encrypt`` True/False) or scan (None) covers."""
    out = []
    for m in mv.service.list():
        if user is not None and (m.users != [user] or m.groups):
            continue
        if encrypt and not m.encrypt:
            continue
        out.append(m)
    return out


def targets(home, homes: list[str], mv: MountedVault, *, encrypt: bool | None,
            user: str | None) -> list[Target]:
    """Every (vault, roots) a job covers. A mount listed from the server's record
    (``filesystem_check_changes = never``) is re-read first, so files other tools put
    there are converted too."""
    out: list[Target] = [(home, homes)]
    for m in mounts_for_job(mv, encrypt=encrypt, user=user):
        out.append((mv.vault_for_job(m), [m.root]))
    return out


def count_forms(home, homes: list[str], mv: MountedVault) -> list[dict]:
    """(encrypted, plaintext) files per storage: the homes, then every mount. Used by
    encryption:status and by encryption:disable, which must not switch off while a mount
    still holds encrypted files (decrypt-all covers mounts, so its count must too)."""
    out = []
    jobs = [(home, homes, "home", None)] + [
        (mv.vault_for_job(m), [m.root], m.mount_point, m.id)
        for m in mounts_for_job(mv, encrypt=None, user=None)]
    for vault, roots, name, mount_id in jobs:
        enc, plain = convert.count_forms(vault, roots)
        out.append({"storage": name, "mountId": mount_id, "encryptedFiles": enc,
                    "plaintextFiles": plain})
    return out


def plan(jobs: list[Target]) -> list[tuple[str, int]]:
    return [f for vault, roots in jobs for f in convert.plan(vault, roots)]


def convert_all(jobs: list[Target], *, encrypt: bool,
                progress: convert.Progress | None = None) -> convert.ConvertReport:
    total = convert.ConvertReport()
    for vault, roots in jobs:
        part = convert.convert_all(vault, roots, encrypt=encrypt, progress=progress)
        total.converted += part.converted
        total.skipped += part.skipped
        total.bytes += part.bytes
        total.failed += part.failed
    return total


def scan(jobs: list[Target], progress: check.Progress | None = None) -> check.CheckReport:
    """encryption:scan over homes and mounts: one report (mount files by ``~mountN/``
    path; files without a key here named by file ID)."""
    total = check.CheckReport()
    for i, (vault, roots) in enumerate(jobs):
        if i == 0:
            part = check.scan(vault, roots, progress=progress)
        else:
            part = check.scan(vault, path=roots[0], progress=progress)
        total.files += part.files
    return total
