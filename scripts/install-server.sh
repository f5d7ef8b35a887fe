#!/usr/bin/env bash
# One-command install of davserver on a fresh Debian (12+) machine. Run as root
# from a checkout of the repository:
#
#     sudo bash scripts/install-server.sh
#
# What it does (every step is safe to repeat; re-running upgrades the code and
# restarts the server, an existing instance's config, keys and data are kept):
#   1. installs missing Debian packages (python3 >= 3.11, python3-venv, curl)
#   2. creates a venv in /opt/davserver/venv and pip-installs this checkout
#   3. symlinks /usr/local/bin/davserver
#   4. creates the system user 'davserver' (no login shell, home
#      /var/lib/davserver) and /etc/davserver + /var/lib/davserver (0750)
#   5. runs 'davserver init' as that user: creates config, instance secret,
#      database, key store and the admin user and PRINTS the URL and the admin
#      credentials (only the first time)
#   6. starts the server: as the systemd service 'davserver' if systemd is
#      running, otherwise in the background with nohup (log:
#      /var/log/davserver.log) - and waits until it answers.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

PREFIX=/opt/davserver
VENV="$PREFIX/venv"
BIN_LINK=/usr/local/bin/davserver
SVC_USER=davserver
CONF_DIR=/etc/davserver
CONFIG="$CONF_DIR/davserver.toml"
DATA_DIR=/var/lib/davserver
LOG_FILE=/var/log/davserver.log
PID_FILE=/run/davserver.pid
UNIT_SRC="$REPO/systemd/davserver.service"
UNIT_DST=/etc/systemd/system/davserver.service
PORT=8080
STATUS_URL="http://127.0.0.1:$PORT/status.php"
FILES_URL="http://127.0.0.1:$PORT/remote.php/dav/files/admin/"

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore
export PIP_NO_INPUT=1

# Files we create in /opt (the venv) must be readable by the service user even
# if root's umask is stricter; private files get their own umask below.
umask 022

log() { printf '==> %s\n' "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run this as root (sudo bash $0)"
[ -f "$REPO/pyproject.toml" ] || die "$REPO does not look like the davserver repository"

# ---------------------------------------------------------------- helpers
apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    if [ "$apt_updated" = 0 ]; then
        apt-get -q -o DPkg::Lock::Timeout=600 update
        apt_updated=1
    fi
    apt-get -y -q -o DPkg::Lock::Timeout=600 install --no-install-recommends "$@"
}

# Run a command as the service user, with a clean environment and without a
# PAM session (setpriv execs directly, so "$!" is the server's own pid).
as_service_user() {
    local envs=(HOME="$DATA_DIR" USER="$SVC_USER" LOGNAME="$SVC_USER"
                PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONUNBUFFERED=1)
    if command -v setpriv >/dev/null 2>&1; then
        setpriv --reuid="$SVC_USER" --regid="$SVC_USER" --init-groups -- \
            env -i "${envs[@]}" "$@"
    else
        runuser -u "$SVC_USER" -- env -i "${envs[@]}" "$@"
    fi
}

# Prints the interpreter's path if it is Python >= 3.11 and usable by a system
# service: not inside /root or /home (e.g. pyenv), which the service user
# cannot read and which ProtectHome=yes hides from the systemd unit.
usable_python() {
    local cand="$1" path
    path="$(command -v "$cand" 2>/dev/null)" || return 1
    "$path" - <<'EOF' 2>/dev/null || return 1
import os, sys
if sys.version_info < (3, 11):
    sys.exit(1)
for p in (sys.executable, sys.base_prefix):
    real = os.path.realpath(p)
    if real == "/root" or real.startswith(("/root/", "/home/")):
        sys.exit(1)
EOF
    # pyenv shims live in /root but exec the real interpreter: resolve it.
    "$path" -c 'import sys; print(sys.executable)'
}

# ---------------------------------------------------------------- 1. packages
log "checking prerequisites"
PY=""
for cand in python3 python3.13 python3.12 python3.11 /usr/bin/python3; do
    if PY="$(usable_python "$cand")"; then break; fi
    PY=""
done
if [ -z "$PY" ]; then
    log "no system-wide Python >= 3.11 found, installing Debian's python3"
    apt_install python3 python3-venv
    PY="$(usable_python /usr/bin/python3)" \
        || die "/usr/bin/python3 is older than 3.11 (Debian 12 or newer is required)"
fi
PYVER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
log "using $PY (Python $PYVER)"

# Debian splits venv/ensurepip out of the interpreter package.
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    case "$PY" in
        /usr/bin/*) apt_install "python$PYVER-venv" ;;
        *) die "$PY cannot create virtual environments (venv/ensurepip missing)" ;;
    esac
fi
command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates

# ---------------------------------------------------------------- 2. venv
if [ -x "$VENV/bin/python" ] \
    && [ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$PYVER" ]; then
    log "reusing venv $VENV"
else
    log "creating venv $VENV"
    rm -rf "$VENV"
    mkdir -p "$PREFIX"
    "$PY" -m venv "$VENV"
fi
log "installing davserver from $REPO into $VENV"
"$VENV/bin/python" -m pip install -q --progress-bar off --upgrade pip
# Build from a clean copy of the working tree: setuptools would otherwise
# write build/ and *.egg-info into the checkout, and a stale build/lib can
# smuggle deleted modules into the installed package.
SRC_COPY="$(mktemp -d /tmp/davserver-src.XXXXXX)"
trap 'rm -rf "$SRC_COPY"' EXIT
tar -C "$REPO" --exclude=./.git --exclude=./build --exclude=./.venv \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.pytest_cache \
    --exclude=.ruff_cache -cf - . | tar -C "$SRC_COPY" -xf -
# A local directory is always rebuilt and reinstalled (so a re-run upgrades
# the code); --upgrade also pulls in new/updated dependencies.
"$VENV/bin/python" -m pip install -q --progress-bar off --upgrade "$SRC_COPY"
rm -rf "$SRC_COPY"
trap - EXIT
[ -x "$VENV/bin/davserver" ] || die "$VENV/bin/davserver was not installed"

# ---------------------------------------------------------------- 3. symlink
ln -sfn "$VENV/bin/davserver" "$BIN_LINK"
log "linked $BIN_LINK -> $VENV/bin/davserver"

# ---------------------------------------------------------------- 4. user, dirs
if ! getent passwd "$SVC_USER" >/dev/null; then
    log "creating system user $SVC_USER"
    useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "davserver WebDAV server" "$SVC_USER"
fi
# Both directories belong to the service user: 'davserver init' writes the
# config and the instance secret into /etc/davserver, the data (DB, key
# store, encrypted blobs) into /var/lib/davserver. 0750: nobody else gets in.
install -d -m 0750 -o "$SVC_USER" -g "$SVC_USER" "$CONF_DIR" "$DATA_DIR"
chown "$SVC_USER:$SVC_USER" "$CONF_DIR" "$DATA_DIR"
chmod 0750 "$CONF_DIR" "$DATA_DIR"

# ---------------------------------------------------------------- 5. init
had_config=0
[ -e "$CONFIG" ] && had_config=1
log "initialising the instance (davserver init)"
echo
set +e
(cd "$DATA_DIR" && umask 077 && as_service_user "$BIN_LINK" init --config "$CONFIG" --data-dir "$DATA_DIR")
rc=$?
set -e
echo
if [ "$rc" -ne 0 ]; then
    if [ "$had_config" = 1 ]; then
        log "WARNING: 'davserver init' exited with $rc on the existing instance; continuing"
    else
        die "'davserver init' failed (exit $rc)"
    fi
fi
[ -e "$CONFIG" ] || die "'davserver init' did not create $CONFIG"

# ---------------------------------------------------------------- 6. start
wait_until_up() {
    local pid="${1:-}"
    for _ in $(seq 1 30); do
        if curl -fsS -o /dev/null --max-time 2 "$STATUS_URL" 2>/dev/null; then
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 1
    done
    return 1
}

if [ -d /run/systemd/system ]; then
    log "installing systemd unit $UNIT_DST"
    install -m 0644 "$UNIT_SRC" "$UNIT_DST"
    systemctl daemon-reload
    systemctl enable davserver
    # restart (not just start) so that a re-run picks up the new code
    systemctl restart davserver
    if ! wait_until_up; then
        systemctl --no-pager status davserver >&2 || true
        journalctl --no-pager -n 40 -u davserver >&2 || true
        die "davserver did not answer on $STATUS_URL within 30 s"
    fi
else
    log "systemd is not running: starting davserver in the background (log: $LOG_FILE)"
    # Stop a server started by an earlier run of this script.
    if [ -s "$PID_FILE" ]; then
        old="$(cat "$PID_FILE")"
        old_cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$old/cmdline" || true)"
        if [[ "$old_cmd" == *davserver*serve* ]]; then
            log "stopping the running davserver (pid $old)"
            kill "$old" 2>/dev/null || true
            for _ in $(seq 1 20); do
                kill -0 "$old" 2>/dev/null || break
                sleep 0.5
            done
            kill -9 "$old" 2>/dev/null || true
        fi
        rm -f "$PID_FILE"
    fi
    if curl -fsS -o /dev/null --max-time 2 "$STATUS_URL" 2>/dev/null; then
        die "something else is already answering on $STATUS_URL; stop it first"
    fi
    touch "$LOG_FILE"
    chown root:"$SVC_USER" "$LOG_FILE"
    chmod 0640 "$LOG_FILE"
    # setsid: own session, so closing this terminal does not stop the server.
    (
        cd "$DATA_DIR"
        umask 077
        exec setsid nohup setpriv --reuid="$SVC_USER" --regid="$SVC_USER" --init-groups -- \
            env -i HOME="$DATA_DIR" USER="$SVC_USER" LOGNAME="$SVC_USER" \
            PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONUNBUFFERED=1 \
            "$BIN_LINK" serve --config "$CONFIG"
    ) </dev/null >>"$LOG_FILE" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"
    if ! wait_until_up "$pid"; then
        kill "$pid" 2>/dev/null || true
        rm -f "$PID_FILE"
        echo "---- last lines of $LOG_FILE ----" >&2
        tail -n 40 "$LOG_FILE" >&2 || true
        die "davserver exited or did not answer on $STATUS_URL within 30 s"
    fi
    log "started (pid $pid); stop it with: kill \$(cat $PID_FILE)"
fi

echo "davserver is running at $FILES_URL"
