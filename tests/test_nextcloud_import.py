"""import:nextcloud: real Nextcloud 25 data byte-exact, every format variant, every failure.

The real sample lives beside the repository (``../shared/nextcloud-testdata``; CI puts it
there). Its absence is a failure, not a skip: without it nothing here proves we read what
Nextcloud actually writes. ``NEXTCLOUD_TESTDATA`` points elsewhere (a worktree).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from davserver.errors import DavServerError, UserError, WrongPassword
from davserver.nextcloud import content, importer
from davserver.nextcloud.phpconfig import parse_config
from davserver.vault import context
from tests.instances import make_instance
from tests.nc_format import LEGACY, NcData, Variant, encrypt_block, header_bytes

TESTDATA = Path(os.environ.get("NEXTCLOUD_TESTDATA")
                or Path(__file__).resolve().parents[2] / "shared" / "nextcloud-testdata")
NC25 = TESTDATA / "25.0.0"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def nc25() -> Path:
    assert (NC25 / "config.php").is_file(), (
        f"Nextcloud test data missing at {NC25}: copy nextcloud-testdata beside the "
        "repository (or set NEXTCLOUD_TESTDATA)")
    return NC25


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("DAVSERVER_PASS", "DAVSERVER_RECOVERY_PASS")}
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "davserver", "import:nextcloud", *args],
                          capture_output=True, text=True, env=full_env, timeout=300)


def tree(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


# --- the real Nextcloud 25.0.0 sample --------------------------------------------------

MODES = {
    "master": {},
    "user": {"DAVSERVER_PASS": "admin"},
    "recovery": {"DAVSERVER_RECOVERY_PASS": "recovery"},
    "pubshare": {},
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_real_data_decrypts_byte_exact(nc25, tmp_path, mode):
    env = MODES[mode]
    flags = (["--password-from-env"] if "DAVSERVER_PASS" in env else []) + \
        (["--recovery-password-from-env"] if "DAVSERVER_RECOVERY_PASS" in env else [])
    out = tmp_path / "out"
    r = run_cli("--datadir", str(nc25 / mode), "--config", str(nc25 / "config.php"),
                *flags, "--decrypt-to", str(out), "--output", "json", env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    originals = tree(nc25 / "original" / "admin" / "files")
    got = tree(out / "admin")
    assert set(got) == set(originals)
    assert report["files"] == len(originals) and report["failed"] == []
    assert report["plain"] == 0  # every file was encrypted, none copied as it was
    for rel, src in originals.items():
        assert got[rel].read_bytes() == src.read_bytes(), rel
        enc = nc25 / mode / "admin" / "files" / rel
        assert got[rel].stat().st_mtime == pytest.approx(enc.stat().st_mtime, abs=1e-3)


def test_real_data_into_instance_then_rerun_skips(nc25, tmp_path):
    inst = make_instance(tmp_path / "dav")
    try:
        args = ["--datadir", str(nc25 / "master"), "--config", str(nc25 / "config.php"),
                "--into-instance", "--instance-config", inst.config.path,
                "--instance-data-dir", inst.config.data_dir, "--output", "json"]
        r = run_cli(*args)
        assert r.returncode == 0, r.stderr
        first = json.loads(r.stdout)
        originals = tree(nc25 / "original" / "admin" / "files")
        assert first["files"] == len(originals) and first["skipped"] == 0
        for rel, src in originals.items():
            assert inst.vault.read_all(f"admin/{rel}") == src.read_bytes(), rel
            rec = inst.db.get_file(f"admin/{rel}")
            assert rec.encrypted  # stored in davserver's own format
            enc = nc25 / "master" / "admin" / "files" / rel
            assert rec.mtime == pytest.approx(enc.stat().st_mtime, abs=1e-3)
        again = run_cli(*args)
        assert again.returncode == 0, again.stderr
        second = json.loads(again.stdout)
        assert (second["files"], second["skipped"]) == (0, len(originals))
    finally:
        inst.close()


def test_real_data_wrong_password_is_a_clear_error(nc25, tmp_path):
    out = tmp_path / "out"
    r = run_cli("--datadir", str(nc25 / "user"), "--config", str(nc25 / "config.php"),
                "--password-from-env", "--decrypt-to", str(out),
                env={"DAVSERVER_PASS": "not-admin"})
    assert r.returncode == WrongPassword.EXIT_CODE
    assert r.stderr.strip().splitlines()[-1] == (
        "davserver: failed to import the Nextcloud data: wrong password for user admin "
        "(or a different config.php)")
    assert not out.exists() or not tree(out)


def test_real_data_wrong_secret_is_a_clear_error(nc25, tmp_path):
    conf = tmp_path / "config.php"
    text = (nc25 / "config.php").read_text()
    conf.write_text(text.replace("'secret' => '2ls6", "'secret' => 'XXXX"))
    r = run_cli("--datadir", str(nc25 / "master"), "--config", str(conf),
                "--decrypt-to", str(tmp_path / "out"))
    assert r.returncode != 0
    assert "instance secret" in r.stderr and "Traceback" not in r.stderr


def test_real_data_without_password_says_what_is_missing(nc25, tmp_path):
    r = run_cli("--datadir", str(nc25 / "user"), "--config", str(nc25 / "config.php"),
                "--dry-run", "--output", "json")
    assert r.returncode == 3
    failed = json.loads(r.stdout)["failed"]
    assert failed and all("--password-from-env" in f["reason"] for f in failed)


# --- every variant, from the test encoder ---------------------------------------------

@pytest.fixture(scope="module")
def keyed(tmp_path_factory) -> NcData:
    """One data dir with every kind of key pair (and key-file formats)."""
    d = NcData(tmp_path_factory.mktemp("nc"))
    d.add_master()
    d.add_pubshare()
    d.add_recovery("recovery-pw")
    d.add_user_key("bob", "bob-pw")
    d.add_user_key("hash2", "pw", key_format="hash2")
    d.add_user_key("legacypw", "pw", key_format="password", cipher="AES-256-CFB",
                   encoding="base64", signed=False, wrapped=False)
    d.add_user_key("b64key", "pw", encoding="base64")
    return d


def decrypt_one(d: NcData, user: str, rel: str, **passwords) -> bytes:
    src = importer.open_source(str(d.datadir), str(d.config_path), [user], **passwords)
    path = d.file_path(user, rel)
    item = importer.Item(user, rel, str(path), False, path.stat().st_size, 0.0)
    opened = importer.open_item(src, item)
    out = bytearray()
    opened.copy_to(out.extend)
    assert opened.size == len(out)  # size known before decrypting (resume check)
    return bytes(out)


VARIANTS = {
    "nc25-ctr-binary-signed-rc4": Variant(),
    "nc27-oaep-share-keys": Variant(share="oaep"),
    "base64-signed": Variant(encoding="base64"),
    "aes128-ctr": Variant(cipher="AES-128-CTR"),
    "cfb256-signed": Variant(cipher="AES-256-CFB"),
    "cfb256-unsigned-base64": Variant(cipher="AES-256-CFB", signed=False, encoding="base64"),
    "cfb128-unsigned-binary": Variant(cipher="AES-128-CFB", signed=False),
    "legacy-no-header": LEGACY,
    "keys-not-wrapped-nc19": Variant(wrapped=False),
    "oaep-not-wrapped": Variant(share="oaep", wrapped=False),
    "version-0": Variant(version=0),
    "version-733": Variant(version=733),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_decrypts(keyed, name):
    data = os.urandom(3 * 8096 + 1234)
    keyed.add_file("bob", f"variants/{name}", data, ["master_1a2b3c4d"], VARIANTS[name])
    assert decrypt_one(keyed, "bob", f"variants/{name}") == data


@pytest.mark.parametrize("size", [0, 1, 6072, 6126, 8095, 8096, 8097, 2 * 8168])
@pytest.mark.parametrize("variant", ["nc25-ctr-binary-signed-rc4", "base64-signed",
                                     "cfb128-unsigned-binary", "legacy-no-header"])
def test_block_boundaries(keyed, size, variant):
    data = os.urandom(size)
    rel = f"sizes/{variant}-{size}"
    keyed.add_file("bob", rel, data, ["master_1a2b3c4d"], VARIANTS[variant])
    assert decrypt_one(keyed, "bob", rel) == data


RECIPIENTS = {  # key pair the file is shared with -> passwords the import gets
    "master_1a2b3c4d": {},
    "pubShare_5e6f7a8b": {},
    "recoveryKey_5e6f7a8b": {"recovery_password": "recovery-pw"},
    "bob": {"password": "bob-pw"},
    "hash2": {"password": "pw"},
    "legacypw": {"password": "pw"},
    "b64key": {"password": "pw"},
}


@pytest.mark.parametrize("share", ["rc4", "oaep"])
@pytest.mark.parametrize("recipient", sorted(RECIPIENTS))
def test_each_key_pair_opens_its_share_keys(keyed, recipient, share):
    owner = recipient if recipient in ("bob", "hash2", "legacypw", "b64key") else "bob"
    data = os.urandom(10_000)
    rel = f"shared/{recipient}-{share}"
    keyed.add_file(owner, rel, data, [recipient], Variant(share=share))
    assert decrypt_one(keyed, owner, rel, **RECIPIENTS[recipient]) == data


def test_share_key_of_another_key_pair_is_not_trusted(keyed):
    """PKCS#1 v1.5 'opens' with any RSA key (implicit rejection): the MAC must refuse."""
    data = os.urandom(9000)
    keyed.add_file("bob", "notmine", data, ["master_1a2b3c4d"])
    kd = keyed.key_dir("bob", "notmine")
    # Only the user's share-key name is present, but it holds the master key's wrap.
    (kd / "master_1a2b3c4d.shareKey").rename(kd / "bob.shareKey")
    with pytest.raises(DavServerError) as e:
        decrypt_one(keyed, "bob", "notmine", password="bob-pw")
    # Usually the random "key" has the wrong length; if not, the MAC refuses it.
    assert "no share key opened" in str(e.value) or "match the signature" in str(e.value)


def test_wrong_recovery_password(keyed):
    with pytest.raises(WrongPassword):
        importer.open_source(str(keyed.datadir), str(keyed.config_path), ["bob"],
                             recovery_password="nope")


def test_unknown_user_is_a_usage_error(keyed):
    with pytest.raises(UserError):
        importer.select_users(str(keyed.datadir), ["../etc"])


# --- failures: reported, non-zero exit, and no output file ----------------------------

def _truncate_mid_block(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-5000])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8192 + 8192 + 100] ^= 0x01  # in the second data block's ciphertext
    path.write_bytes(bytes(data))


def _drop_keys(d: NcData, user: str, rel: str) -> None:
    shutil.rmtree(d.key_dir(user, rel))


def _mixed_versions(d: NcData, user: str, rel: str, data: bytes) -> None:
    """Block 1 signed with another version than blocks 0 and 2 (restored old block)."""
    path = d.file_path(user, rel)
    d.add_file(user, rel, data, ["master_1a2b3c4d"])  # for the keys; content rewritten
    from davserver.nextcloud import filekeys, layout
    from davserver.nextcloud.importer import open_source

    src = open_source(str(d.datadir), str(d.config_path), [user])
    key = filekeys.candidates(layout.file_key_paths(str(d.datadir), user, rel),
                              src.private_keys, d.cfg.secret, None)[0]
    v = Variant()
    blocks = [data[i:i + 8096] for i in range(0, len(data), 8096)]
    body = header_bytes(v) + b"".join(
        encrypt_block(b, key, v, f"{i}end" if len(b) < 8096 else str(i),
                      version=2 if i == 1 else 1) for i, b in enumerate(blocks))
    path.write_bytes(body)


DAMAGE = ["truncated", "flipped-byte", "missing-key", "version-out-of-range",
          "mixed-versions"]


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_file_fails_cleanly(tmp_path, damage):
    d = NcData(tmp_path / "nc")
    m = d.add_master()
    good, bad = os.urandom(20_000), os.urandom(3 * 8096 + 500)
    d.add_file("bob", "good.bin", good, [m])
    if damage == "mixed-versions":
        _mixed_versions(d, "bob", "bad.bin", bad)
    else:
        version = 9 if damage == "version-out-of-range" else 1
        path = d.add_file("bob", "dir/bad.bin", bad, [m], Variant(version=version))
        if damage == "truncated":
            _truncate_mid_block(path)
        elif damage == "flipped-byte":
            _flip_byte(path)
        elif damage == "missing-key":
            _drop_keys(d, "bob", "dir/bad.bin")
    out = tmp_path / "out"
    r = run_cli("--datadir", str(d.datadir), "--config", str(d.config_path),
                "--decrypt-to", str(out), "--max-version", "5", "--output", "json")
    assert r.returncode == 3, r.stderr
    report = json.loads(r.stdout)
    assert report["files"] == 1 and len(report["failed"]) == 1
    failed = report["failed"][0]
    assert failed["path"].startswith("bob/") and failed["path"].endswith("bad.bin")
    expected = {"truncated": "cut short", "flipped-byte": "failed authentication",
                "missing-key": "no encryption keys", "version-out-of-range": "version 0..5",
                "mixed-versions": "block 1 failed authentication"}[damage]
    assert expected in failed["reason"]
    assert set(tree(out)) == {"bob/good.bin"}  # nothing for the bad file, no temp files
    assert (out / "bob" / "good.bin").read_bytes() == good


# --- into an instance: users created, user-key mode, plain files, dry run --------------

def test_into_user_key_instance_creates_user(tmp_path):
    d = NcData(tmp_path / "nc")
    d.add_user_key("carol", "carol-pw1")
    files = {"a.txt": os.urandom(100), "deep/er/b.bin": os.urandom(50_000)}
    for rel, data in files.items():
        d.add_file("carol", rel, data, ["carol"], mtime=1_500_000_000.0)
    d.add_plain_file("carol", "notes/plain.md", b"never encrypted\n")
    d.add_file("carol", "broken.bin", os.urandom(9000), ["carol"])
    data = bytearray(d.file_path("carol", "broken.bin").read_bytes())
    data[8192 + 10] ^= 0xFF
    d.file_path("carol", "broken.bin").write_bytes(bytes(data))
    inst = make_instance(tmp_path / "dav", user_mode=True)
    try:
        base = ["--datadir", str(d.datadir), "--config", str(d.config_path),
                "--password-from-env", "--into-instance", "--instance-config",
                inst.config.path, "--instance-data-dir", inst.config.data_dir,
                "--output", "json"]
        env = {"DAVSERVER_PASS": "carol-pw1"}
        dry = run_cli(*base, "--dry-run", env=env)
        assert dry.returncode == 3, dry.stderr
        assert json.loads(dry.stdout)["files"] == 3
        assert inst.users.get("carol") is None  # a dry run changes nothing
        r = run_cli(*base, env=env)
        assert r.returncode == 3, r.stderr
        report = json.loads(r.stdout)
        assert (report["files"], report["plain"]) == (3, 1)
        assert report["createdUsers"] == {"carol": None}  # given password, not shown
        assert [f["path"] for f in report["failed"]] == ["carol/broken.bin"]
        assert inst.users.check_local("carol", "carol-pw1")
        with context.acting_as(*inst.unlock("carol", "carol-pw1")):
            for rel, data in files.items():
                assert inst.vault.read_all(f"carol/{rel}") == data
                assert inst.db.get_file(f"carol/{rel}").mtime == 1_500_000_000.0
            assert inst.vault.read_all("carol/notes/plain.md") == b"never encrypted\n"
        assert inst.vault.stat("carol/broken.bin") is None
    finally:
        inst.close()


# --- config.php ------------------------------------------------------------------------

def test_config_php_is_parsed_not_executed():
    cfg = parse_config("""<?php
    // comment
    $CONFIG = array (
      'secret' => 'a\\'b\\\\c',
      "instanceid" => "x\\ty",
      'trusted_domains' => array ( 0 => 'h1', 1 => 'h2', ),
      'list' => ['a', 'b'],
      'n' => 42, 'f' => 1.5, 't' => true, 'z' => NULL, /* block */
    );
    """)
    assert cfg["secret"] == "a'b\\c" and cfg["instanceid"] == "x\ty"
    assert cfg["trusted_domains"] == ["h1", "h2"] and cfg["list"] == ["a", "b"]
    assert (cfg["n"], cfg["f"], cfg["t"], cfg["z"]) == (42, 1.5, True, None)


@pytest.mark.parametrize("text", [
    "<?php $CONFIG = array('secret' => getenv('S'));",
    "<?php $CONFIG = array('secret' => 'a' . 'b');",
    "<?php system('id');",
    "<?php $CONFIG = array('secret' => 'unterminated);",
])
def test_config_php_with_code_is_refused(text):
    with pytest.raises(UserError):
        parse_config(text)


def test_header_of_other_module_is_refused():
    with pytest.raises(DavServerError):
        content.parse_header(b"HBEGIN:oc_encryption_module:OTHER:cipher:AES-256-CTR:HEND")


def test_plain_file_with_stale_keys_is_copied(tmp_path):
    """decrypt-all leaves a plaintext file; keys left behind must not make it 'legacy'."""
    d = NcData(tmp_path / "nc")
    m = d.add_master()
    d.add_file("bob", "was-encrypted.txt", b"old", [m])
    d.add_plain_file("bob", "was-encrypted.txt", b"now plain text, header gone\n" * 500)
    d.add_plain_file("bob", "upload.bin.ocTransferId123.part", b"unfinished")
    out = tmp_path / "out"
    r = run_cli("--datadir", str(d.datadir), "--config", str(d.config_path),
                "--decrypt-to", str(out), "--output", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["plain"] == 1
    assert (out / "bob" / "was-encrypted.txt").read_bytes() == \
        b"now plain text, header gone\n" * 500
    assert set(tree(out)) == {"bob/was-encrypted.txt"}  # the unfinished upload left out


def test_newer_file_at_target_is_kept(tmp_path):
    d = NcData(tmp_path / "nc")
    m = d.add_master()
    d.add_file("bob", "doc.txt", b"from nextcloud", [m], mtime=1_600_000_000.0)
    out = tmp_path / "out"
    (out / "bob").mkdir(parents=True)
    (out / "bob" / "doc.txt").write_bytes(b"edited later")
    r = run_cli("--datadir", str(d.datadir), "--config", str(d.config_path),
                "--decrypt-to", str(out), "--output", "json")
    assert r.returncode == 3
    assert "newer file" in json.loads(r.stdout)["failed"][0]["reason"]
    assert (out / "bob" / "doc.txt").read_bytes() == b"edited later"


@pytest.mark.parametrize("version", ["1", "2", "3"])
def test_key_file_wrapping_versions(version):
    from davserver.nextcloud import keyfiles
    from tests.nc_format import wrap

    key = os.urandom(32)
    iv = b"abcdefghABCDEFGH" if version == "1" else os.urandom(16)
    blob = wrap(key, "the-secret", iv, version=version)
    assert keyfiles.unwrap(blob, "the-secret") == key
    with pytest.raises(DavServerError):
        keyfiles.unwrap(blob, "another-secret")


def test_one_password_needs_named_users(tmp_path):
    d = NcData(tmp_path / "nc")
    for user, pw in (("ann", "ann-pw"), ("ben", "ben-pw")):
        d.add_user_key(user, pw)
        d.add_file(user, "f.txt", f"{user}'s".encode(), [user])
    base = ["--datadir", str(d.datadir), "--config", str(d.config_path), "--password-from-env",
            "--decrypt-to", str(tmp_path / "out")]
    r = run_cli(*base, env={"DAVSERVER_PASS": "ann-pw"})
    assert r.returncode == 2 and "--user" in r.stderr
    r = run_cli(*base, "--user", "ann", env={"DAVSERVER_PASS": "ann-pw"})
    assert r.returncode == 0, r.stderr
    assert set(tree(tmp_path / "out")) == {"ann/f.txt"}
    assert (tmp_path / "out" / "ann" / "f.txt").read_bytes() == b"ann's"
