"""``init`` and ``serve``: create an instance, run the HTTP server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

from davserver import config as config_mod
from davserver.cli.common import add_command
from davserver.instance import InitResult, Instance, init_instance

log = logging.getLogger("davserver")


def _url(cfg, user: str = "admin") -> str:
    scheme = "https" if cfg.certfile else "http"
    host = cfg.host if cfg.host not in ("0.0.0.0", "::") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{cfg.port}/remote.php/dav/files/{user}/"


def _announce(cfg, res: InitResult) -> None:
    if res.admin_password:
        print("davserver: created a new instance", file=sys.stderr)
        print(f"  config:          {res.config_path}")
        print(f"  instance secret: {res.secret_file}  (back it up; files cannot be "
              "decrypted without it)")
        if res.reused_secret:
            print("davserver: the instance secret existed already and is used as it is "
                  "(init never replaces one)", file=sys.stderr)
        print(f"  data directory:  {cfg.data_dir}")
        print(f"  URL:             {_url(cfg, res.admin_user)}")
        print(f"  admin user:      {res.admin_user}")
        print(f"  admin password:  {res.admin_password}  (shown once; change it with "
              "'davserver user:resetpassword')")
        sys.stdout.flush()


def _load(args):
    cfg = config_mod.load(args.config, args.data_dir)
    if getattr(args, "host", None):
        cfg.host = args.host
    if getattr(args, "port", None):
        cfg.port = args.port
    if getattr(args, "certfile", None):
        cfg.certfile, cfg.keyfile = args.certfile, args.keyfile
    return cfg


def cmd_init(args) -> int:
    """Create config, instance secret, database, master key and the first admin.

    Safe to run again: what exists is kept, and the admin password is printed only when
    the admin account is created.
    """
    cfg = _load(args)
    res = init_instance(cfg)
    if res.admin_password:
        _announce(cfg, res)
    else:
        print(f"davserver: instance in {cfg.data_dir} already exists; nothing to do")
        print(f"  URL: {_url(cfg)}")
    return 0


def cmd_serve(args) -> int:
    """Run the WebDAV server (creating the instance on first start)."""
    from davserver import malloc_tuning
    from davserver.dav import balance, prefork
    from davserver.meta import verified

    cfg = _load(args)
    logging.getLogger().setLevel(cfg.log_level.upper())
    malloc_tuning.pin_mmap_threshold()  # before any thread; forked workers inherit it
    if getattr(args, "worker_of", None):  # a replacement for a worker that died
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the first process
        prefork.die_with(args.worker_of)
        balance.table = balance.LoadTable(fd=args.load_fd)
        balance.table.take(args.worker_slot)
        sock = socket.socket(fileno=args.listen_fd)
        return _serve(Instance(cfg), shared_socket=sock, announce=False)
    _announce(cfg, init_instance(cfg))
    inst = Instance(cfg)
    inst.vault.recover()  # once, before any worker serves
    inst.dav_vault.recover_mounts()
    count = cfg.workers or prefork.default_workers()
    if count == 1:
        return _serve(inst)
    inst.close()
    sock = prefork.listen(cfg.host, cfg.port)
    cfg.port = sock.getsockname()[1]
    argv = ["serve", "--config", cfg.path, "--data-dir", cfg.data_dir, "--host", cfg.host,
            "--port", str(cfg.port)]
    if cfg.certfile:
        argv += ["--certfile", cfg.certfile, "--keyfile", cfg.keyfile]
    verified.share_with_forked_workers()  # one password check serves every worker
    workers = prefork.Workers(
        count, lambda: _serve(Instance(cfg), shared_socket=sock, announce=False), argv, sock)
    workers.fork_initial()
    return _serve(Instance(cfg), shared_socket=sock, workers=workers)


def _serve(inst: Instance, *, shared_socket: socket.socket | None = None,
           announce: bool = True, workers=None) -> int:
    """Serve on this process until SIGTERM/SIGINT (``workers``: the others to supervise)."""
    from davserver.dav.app import make_server

    cfg = inst.config
    server = make_server(inst, shared_socket=shared_socket)

    def stop(signum, frame):
        # cheroot's stop() waits for serve() to return, and serve() runs on this very
        # thread: stopping from here would wait for itself. Stop from another thread.
        log.info("stopping (signal %d)", signum)
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    if announce:
        signal.signal(signal.SIGINT, stop)
    server.prepare()
    cfg.port = server.bind_addr[1]
    if shared_socket is not None:
        from davserver.dav import balance

        balance.table.serving()
        log.info("worker %d serving", os.getpid())
    if announce:
        extra = f" ({workers.count} worker processes)" if workers else ""
        log.info("davserver listening on %s%s", _url(cfg, "USER"), extra)
        print(f"davserver: serving on {_url(cfg, 'USER')}{extra}", flush=True)
    if workers:
        workers.supervise()
    try:
        server.serve()
    finally:
        if workers:
            workers.stop()
        inst.close()
    return 0


def cmd_selftest(args) -> int:
    """Run the known-answer and tamper tests of the encryption code on this machine."""
    from davserver.crypto import selftest

    failed = 0
    for name, error in selftest.run():
        print(f"  {'ok  ' if error is None else 'FAIL'} {name}" + (f": {error}" if error else ""))
        failed += error is not None
    print("selftest passed" if not failed else f"selftest: {failed} checks FAILED")
    return 3 if failed else 0


def register(sub, common) -> None:
    add_command(sub, common, "selftest", cmd_selftest, cmd_selftest.__doc__, "run the selftest")
    for name, func, action in (("init", cmd_init, "initialise the instance"),
                               ("serve", cmd_serve, "serve")):
        p = add_command(sub, common, name, func, func.__doc__, action)
        p.add_argument("--host", help="listen address (default from config: 127.0.0.1)")
        p.add_argument("--port", type=int, help="listen port (default from config: 8080)")
        p.add_argument("--certfile", help="PEM certificate for HTTPS")
        p.add_argument("--keyfile", help="PEM private key for HTTPS")
        if name == "serve":
            # A replacement worker: its parent, the inherited listening socket and load
            # table (descriptors), and its slot in that table.
            for flag in ("--worker-of", "--listen-fd", "--load-fd", "--worker-slot"):
                p.add_argument(flag, type=int, help=argparse.SUPPRESS)
