"""Account and key flows shared by the CLI and the web pages (user-key mode and recovery).

Each function is one flow a person asks for: change a key password after the directory
changed it, opt in to recovery, reset a password with the recovery key. All of them only
re-wrap keys; file contents are never rewritten. Every per-file loop is idempotent, so an
interrupted run is finished by running it again.
"""

from __future__ import annotations

from collections.abc import Callable

from davserver.errors import UserError
from davserver.instance import Instance
from davserver.vault import convert_mounts
from davserver.vault.userkeys import rewrap_files

Progress = Callable[[int, int], None] | None


def _file_ids(inst: Instance, user: str) -> list[bytes]:
    return [r.file_id for r in inst.db.iter_files(user) if r.file_id]


def _require_user_mode(inst: Instance) -> None:
    if inst.mode() != "user":
        raise UserError("this only applies in user-key mode (master-key mode has no per-user "
                        "keys; see encryption:status)")


def update_key_password(inst: Instance, user: str, old: str, new: str) -> None:
    """The login password changed elsewhere: re-seal the user's key from old to new."""
    _require_user_mode(inst)
    inst.userkeys.rewrap(user, old, new)
    inst.users._forget(user)


def change_local_password(inst: Instance, user: str, old: str, new: str) -> None:
    """A local user changes their password: check the old one, re-seal the key, re-hash."""
    if not inst.users.check_local(user, old):
        raise UserError("the current password is wrong")
    inst.users.check_password_rules(new)  # before anything changes
    if inst.mode() == "user" and inst.userkeys.has_keys(user):
        inst.userkeys.rewrap(user, old, new)
    inst.users.set_password_hash(user, new)


def set_recovery(inst: Instance, user: str, enabled: bool, *, password: str | None = None,
                 progress: Progress = None) -> dict:
    """Opt in (wrap all the user's data keys for the recovery key) or out (drop them)."""
    _require_user_mode(inst)
    rec = inst.userkeys.recovery_public()
    if enabled:
        if rec is None:
            raise UserError("the administrator has not enabled a recovery key")
        if password is None:
            raise UserError("opting in needs the user's password (to read their keys)")
        ident = inst.userkeys.unlock(user, password)
        inst.db.set_setting(f"recovery.optin.{user}", "1")
        return rewrap_files(inst.keys, _file_ids(inst, user), opener=[ident], add=[rec],
                            progress=progress)
    inst.db.set_setting(f"recovery.optin.{user}", "0")
    return rewrap_files(inst.keys, _file_ids(inst, user), opener=[],
                        remove=lambda r: r.startswith("recovery:"), progress=progress)


def recover_user(inst: Instance, user: str, recovery_password: str, new_password: str,
                 progress: Progress = None) -> dict:
    """Admin reset with the recovery key: a new key pair for the user under the new
    password, every data key re-wrapped for it. Files the user had not opted in for
    recovery stay unreadable (reported as failed)."""
    _require_user_mode(inst)
    record = inst.users.require(user)
    if record.backend == "local":
        inst.users.check_password_rules(new_password)
    recovery = inst.userkeys.unlock_recovery(recovery_password)
    ids = _file_ids(inst, user)
    unrecoverable = [fid for fid in ids if not any(
        w.recipient == recovery.recipient for w in inst.keys.load(fid))]
    if unrecoverable and inst.userkeys.has_keys(user):
        # A new key would strand these files for good; the user's old key still opens them.
        raise UserError(
            f"{len(unrecoverable)} of {user}'s files are not wrapped for the recovery key "
            "(the user did not opt in, or opted in after writing them); recovering now would "
            "make them unreadable. Nothing was changed")
    ident = inst.userkeys.create(user, new_password)
    new_pub = inst.userkeys.public(user)
    result = rewrap_files(
        inst.keys, ids, opener=[recovery, ident], add=[new_pub],
        remove=lambda r: r.startswith(f"user:{user}:") and r != new_pub.recipient,
        progress=progress)
    if record.backend == "local":
        inst.users.set_password_hash(user, new_password)
    inst.users._forget(user)
    return result


def disable_recovery(inst: Instance, recovery_password: str, progress: Progress = None) -> dict:
    """Remove the recovery key and every wrap made for it; all users are opted out."""
    inst.userkeys.unlock_recovery(recovery_password)
    ids = [r.file_id for r in inst.db.iter_files() if r.file_id]
    result = rewrap_files(inst.keys, ids, opener=[], remove=lambda r: r.startswith("recovery:"),
                          progress=progress)
    for u in inst.users.list():
        inst.db.delete_setting(f"recovery.optin.{u.name}")
    inst.userkeys.remove_recovery(recovery_password)
    return result


def file_forms(inst: Instance) -> list[dict]:
    """Encrypted and plaintext files per storage: homes and team folders, then each
    external mount (encryption:status; disable and disable-master-key refuse while any
    storage still holds encrypted files, as decrypt-all covers all of them)."""
    homes = [u.name for u in inst.users.list()] + inst.teamfolders.owners()
    return convert_mounts.count_forms(inst.vault, homes, inst.dav_vault)


def encrypted_file_count(inst: Instance) -> int:
    return sum(s["encryptedFiles"] for s in file_forms(inst))


def disable_master_key(inst: Instance) -> None:
    """Switch to user-key mode; only while no file is encrypted with the master key."""
    if inst.mode() == "user":
        raise UserError("user-key mode is already active")
    n = encrypted_file_count(inst)
    if n:
        raise UserError(
            f"{n} files are encrypted with the master key; run 'davserver "
            "encryption:decrypt-all', then 'encryption:disable-master-key', then "
            "'encryption:encrypt-all' (each user's files are encrypted once they have logged "
            "in; users who never logged in are reported and done on a later run)")
    inst.db.set_setting("encryption.mode", "user")


def enable_master_key(inst: Instance) -> None:
    """Back to master-key mode; only while no file is encrypted with user keys."""
    if inst.mode() == "master":
        raise UserError("master-key mode is already active")
    n = encrypted_file_count(inst)
    if n:
        raise UserError(
            f"{n} files are encrypted with user keys; run 'davserver encryption:decrypt-all "
            "--recovery-password-from-env' (works for users who opted in to recovery; others "
            "must be decrypted while they log in), then 'encryption:enable-master-key', then "
            "'encryption:encrypt-all'")
    if not inst.keys.master_files():
        inst.keys.create_master(inst.secret)
    inst.db.set_setting("encryption.mode", "master")
