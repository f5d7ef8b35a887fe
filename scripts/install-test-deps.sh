#!/usr/bin/env bash
# Install everything the test suite needs on Debian 12 (bookworm):
#   * Debian packages: WebDAV clients used as black-box testers (litmus, rclone,
#     cadaver, curl), an LDAP server + tools for the LDAP auth tests (slapd,
#     ldap-utils) and a headless browser for the web UI tests (chromium,
#     chromium-driver), and redis-server, PostgreSQL and nginx for the
#     scale-out tests (private instances; the system services are not started);
#   * the project itself in editable mode with its [test] extras.
#
# Idempotent and non-interactive: safe to run again and again (apt is skipped
# entirely when every package is already installed), needs no stdin.
# Must run as root (or with password-less sudo).
#
# Environment:
#   PYTHON   interpreter to install into (default: $ROOT/.venv/bin/python if
#            that exists, else python3; if python3 is an "externally managed"
#            distro Python, a venv is created at $ROOT/.venv and used instead)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

export DEBIAN_FRONTEND=noninteractive
export DEBCONF_NONINTERACTIVE_SEEN=true
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore
export PIP_NO_INPUT=1

APT_PACKAGES=(litmus rclone cadaver curl slapd ldap-utils chromium chromium-driver
              nextcloud-desktop-cmd redis-server postgresql nginx)

log() { printf '[install-test-deps] %s\n' "$*"; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        log "ERROR: must run as root (or have sudo)" >&2
        exit 1
    fi
fi

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# Wait up to 10 minutes for another apt/dpkg run to release its lock instead
# of failing immediately.
APT_GET=("${SUDO[@]}" apt-get -y -q -o DPkg::Lock::Timeout=600)

# ---------------------------------------------------------------- Debian packages
missing=()
for p in "${APT_PACKAGES[@]}"; do
    is_installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
    log "Debian packages already installed: ${APT_PACKAGES[*]}"
else
    log "installing Debian packages: ${missing[*]}"

    # slapd: do not build a default directory (tests run their own slapd with
    # their own config in a temp dir); this also means no prompts at all.
    printf '%s\n' \
        'slapd slapd/no_configuration boolean true' \
        | "${SUDO[@]}" debconf-set-selections

    # Keep services (slapd) from being started by the package's postinst.
    # Only add a policy-rc.d if none exists (Docker images often ship one)
    # and remove it again afterwards.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# temporary, created by davserver install-test-deps.sh\nexit 101\n' \
            | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 0755 "$policy"
        created_policy=1
    fi
    cleanup_policy() {
        if [ "$created_policy" = 1 ]; then
            "${SUDO[@]}" rm -f "$policy"
        fi
    }
    trap cleanup_policy EXIT

    "${APT_GET[@]}" update
    "${APT_GET[@]}" install --no-install-recommends "${missing[@]}"

    cleanup_policy
    created_policy=0
    trap - EXIT
fi

# The packaged slapd must not stay running as a system service: it would hold
# port 389 and the tests start their own instance. Only the *system* instance
# is touched (pid file / processes of the 'openldap' user), never a slapd that
# a test run started.
if [ -x /etc/init.d/slapd ] || is_installed slapd; then
    if [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now slapd >/dev/null 2>&1 || true
    else
        "${SUDO[@]}" service slapd stop >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then
            "${SUDO[@]}" update-rc.d slapd disable >/dev/null 2>&1 || true
        fi
    fi
    for pidfile in /run/slapd/slapd.pid /var/run/slapd/slapd.pid; do
        if [ -s "$pidfile" ]; then
            "${SUDO[@]}" kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    if getent passwd openldap >/dev/null 2>&1; then
        "${SUDO[@]}" pkill -x -u openldap slapd 2>/dev/null || true
    fi
fi

# Same for redis-server, PostgreSQL and nginx (the scale-out tests start private
# instances on free ports): policy-rc.d above kept them from starting; also keep
# them from starting at boot, and stop a system instance an earlier install left.
for svc in redis-server postgresql nginx; do
    is_installed "$svc" || continue
    if [ -d /run/systemd/system ]; then
        "${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
        "${SUDO[@]}" service "$svc" stop >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then
            "${SUDO[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
        fi
    fi
done

# Sanity check: the test tools are where the tests expect them.
for tool in litmus rclone cadaver curl ldapadd; do
    command -v "$tool" >/dev/null 2>&1 || { log "ERROR: $tool not found after install" >&2; exit 1; }
done
[ -x /usr/sbin/slapd ] || { log "ERROR: /usr/sbin/slapd missing after install" >&2; exit 1; }
for tool in /usr/bin/redis-server /usr/sbin/nginx; do
    [ -x "$tool" ] || { log "ERROR: $tool missing after install" >&2; exit 1; }
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || { log "ERROR: PostgreSQL initdb missing after install" >&2; exit 1; }

# ---------------------------------------------------------------- Python packages
externally_managed() {
    "$1" - <<'EOF' 2>/dev/null
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if (not in_venv and os.path.exists(marker)) else 1)
EOF
}

if [ -n "${PYTHON:-}" ]; then
    py="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then
    py="$ROOT/.venv/bin/python"
else
    py=python3
    if externally_managed python3; then
        # Debian's own /usr/bin/python3 refuses 'pip install' (PEP 668):
        # use a project-local venv instead (scripts/test.sh picks it up).
        if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
            log "installing python3-venv"
            "${APT_GET[@]}" install --no-install-recommends python3-venv
        fi
        log "creating $ROOT/.venv (python3 is externally managed)"
        python3 -m venv "$ROOT/.venv"
        py="$ROOT/.venv/bin/python"
    fi
fi

"$py" - <<'EOF' || { log "ERROR: $py is older than Python 3.11" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
EOF

if ! "$py" -m pip --version >/dev/null 2>&1; then
    "$py" -m ensurepip --upgrade
fi

log "pip install -e '.[test]' into $("$py" -c 'import sys; print(sys.prefix)')"
"$py" -m pip install --progress-bar off -q -e "${ROOT}[test]"

log "done"
