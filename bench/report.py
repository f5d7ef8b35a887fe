"""Results: Markdown tables with ratios to plain WsgiDAV, machine info, PNG chart."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import statistics
import subprocess
import sys

BASELINE = "wsgidav"

# Cell states other than a list of run values
SKIP = "skip"  # figure not measured for this server by design ("—")


def na(reason: str) -> str:
    return f"n/a ({reason})"


def is_na(v) -> bool:
    return isinstance(v, str) and v.startswith("n/a")


def is_error(v) -> bool:
    return isinstance(v, str) and not is_na(v) and v != SKIP


def median(v):
    if isinstance(v, list) and v:
        return statistics.median(v)
    return None


def fmt_num(x: float, unit: str) -> str:
    if unit == "%":
        return f"{x:.3f} %"
    if unit == "MiB":
        return f"{x:.0f} MiB"
    if abs(x) >= 100:
        return f"{x:,.0f} {unit}"
    if abs(x) >= 10:
        return f"{x:.1f} {unit}"
    return f"{x:.3g} {unit}" if abs(x) >= 0.01 else f"{x:.4f} {unit}"


def ratio(v, base) -> float | None:
    m, b = median(v), median(base)
    if m is None or b is None or b == 0:
        return None
    return m / b


def _sh(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_info(workdir: str) -> list[tuple[str, str]]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            ram = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def ver(pkg: str) -> str:
        try:
            return importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    df = _sh(["df", "-hT", workdir]).splitlines()
    disk = " ".join(df[-1].split()[:3]) if df else "?"
    src = df[-1].split()[0] if df else ""
    model = _sh(["lsblk", "-ndo", "MODEL,ROTA", src]) if src.startswith("/dev/") else ""
    rclone = _sh(["rclone", "version"]).splitlines()[:1] if shutil.which("rclone") else []
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} cores"),
        ("RAM", ram),
        ("kernel", platform.release()),
        ("OS", _sh(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]) or "?"),
        ("Python", sys.version.split()[0]),
        ("wsgidav / cheroot / cryptography",
         f"{ver('wsgidav')} / {ver('cheroot')} / {ver('cryptography')}"),
        ("davserver", ver("davserver")),
        ("rclone", rclone[0] if rclone else "not installed"),
        ("disk (workdir)", f"{disk} {model}".strip()),
    ]


#: Second reference for the large-transfer figures: plain WsgiDAV at its faster block size.
BASELINE_1M = "wsgidav-1m"
LARGE = {"put_mbs", "get_mbs", "curl_put_mbs", "curl_get_mbs", "rclone_put_mbs",
         "rclone_get_mbs", "par_mbs"}


def spread(v) -> str:
    """``[min–max]`` of the runs, empty for a single run."""
    if not isinstance(v, list) or len(v) < 2:
        return ""
    lo, hi = min(v), max(v)
    digits = 3 if max(abs(lo), abs(hi)) < 10 else 0
    return f" [{lo:,.{digits}f}–{hi:,.{digits}f}]"


def _ceiling(ceilings: dict, prefix: str) -> float | None:
    for k, v in ceilings.items():
        if k.startswith(prefix):
            return v
    return None


def limits(server: str, key: str, ceilings: dict, cores: int) -> list[tuple[str, float]]:
    """The machine ceilings that bound figure ``key`` on ``server``: loopback for every
    transfer, AES-GCM for the servers that encrypt (times the cores for the parallel
    GETs), disk write with fsync for uploads to a server that flushes, durable 4 KiB
    files for small uploads to one that does."""
    encrypts = server.startswith("davserver") or server == "rclone-crypt"
    durable = server.startswith("davserver") and "nofsync" not in server
    out: list[tuple[str, float | None]] = []
    if key in LARGE:
        out.append(("loopback", _ceiling(ceilings, "loopback")))
        if encrypts:
            aes = _ceiling(ceilings, "AES-256-GCM")
            if aes is not None and key == "par_mbs":
                aes *= cores
            out.append(("AES-GCM" + (f" ×{cores}" if key == "par_mbs" else ""), aes))
        if durable and "put" in key:
            out.append(("disk+fsync", _ceiling(ceilings, "disk write")))
    elif key == "small_put_1" and durable:
        out.append(("durable files, 1 thread", _ceiling(ceilings, "durable 4 KiB files, 1")))
    elif key == "small_put_4" and durable:
        out.append(("durable files, 16 threads",
                    _ceiling(ceilings, "durable 4 KiB files, 16")))
    return [(n, v) for n, v in out if v]


def write_markdown(path: str, *, title: str, figures: list[dict], servers: list[tuple[str, str]],
                   results: dict, info: list[tuple[str, str]], notes: list[str],
                   params: list[tuple[str, str]], ceilings: dict | None = None,
                   loads: list[float] | None = None) -> list[str]:
    """Write the report; returns the list of missing figures (errors)."""
    base = results.get(BASELINE, {})
    base1m = results.get(BASELINE_1M, {})
    ceilings = ceilings or {}
    lines = [f"# {title}", ""]
    lines += ["Cells: median of the rounds [min–max], and the ratio of medians to plain WsgiDAV "
              "(256 KiB block) measured in the same rounds; large-transfer figures also give "
              "the ratio to plain WsgiDAV with a 1 MiB block (its faster setting). All servers "
              "are up together and take turns in every step of every round, so a disturbance "
              "lands on all of them alike. For ↑ figures a ratio > 1 is better, for ↓ figures "
              "< 1 is better. — = not measured for this server by design.", ""]
    if loads:
        lines += [f"Load average (1 min) at the start of each round and at the end: "
                  f"{', '.join(f'{x:.1f}' for x in loads)} (2 cores: above ~2, other work "
                  "competed for the CPU).", ""]
    hdr = "| figure | better | " + " | ".join(lbl for _n, lbl in servers) + " |"
    lines += [hdr, "|" + "---|" * (len(servers) + 2)]
    missing: list[str] = []
    nas: list[str] = []
    for fig in figures:
        row = [fig["title"], "↑" if fig["better"] == "higher" else "↓"]
        for name, label in servers:
            v = results.get(name, {}).get(fig["key"], "not run")
            if isinstance(v, list) and v:
                cell = fmt_num(median(v), fig["unit"]) + spread(v)
                rs = []
                r = ratio(v, base.get(fig["key"])) if name != BASELINE else None
                if r is not None:
                    rs.append(f"{r:.2f}×")
                r1 = (ratio(v, base1m.get(fig["key"]))
                      if fig["key"] in LARGE and name not in (BASELINE, BASELINE_1M) else None)
                if r1 is not None:
                    rs.append(f"{r1:.2f}× vs 1 MiB")
                if rs:
                    cell += f" ({'; '.join(rs)})"
            elif v == SKIP:
                cell = "—"
            elif is_na(v):
                cell = v.split(":", 1)[0] + (")" if ":" in v else "")
                nas.append(f"{label}: {v}")
            else:
                cell = f"**MISSING**: {str(v)[:120]}"
                missing.append(f"{label}: {fig['title']}: {v}")
            row.append(cell.replace("|", "/"))
        lines.append("| " + " | ".join(row) + " |")
    lines += [""]
    if ceilings:
        lines += ["## Machine ceilings", "",
                  "Measured at the start of the run (bench/ceilings.py), on the same machine "
                  "and disk:", "", "| ceiling | value |", "|---|---|"]
        lines += [f"| {k} | {v:,.0f} |" for k, v in ceilings.items()] + [""]
        rows = []
        cores = os.cpu_count() or 1
        for fig in figures:
            cells, any_cell = [], False
            for name, _label in servers:
                v = results.get(name, {}).get(fig["key"])
                lim = limits(name, fig["key"], ceilings, cores)
                if isinstance(v, list) and v and lim:
                    n, top = min(lim, key=lambda x: x[1])
                    cells.append(f"{median(v) / top * 100:.0f} % of {n}")
                    any_cell = True
                else:
                    cells.append("")
            if any_cell:
                rows.append("| " + " | ".join([fig["title"], *cells]) + " |")
        if rows:
            lines += ["### Figures as a fraction of their limit", "",
                      "Median over the lowest ceiling that bounds the figure on that server "
                      "(loopback for any transfer; AES-GCM on one core for a server that "
                      "encrypts a stream; disk write with fsync for an upload to a server "
                      "that flushes; durable 4 KiB files for small uploads that are flushed).",
                      "", "| figure | " + " | ".join(lbl for _n, lbl in servers) + " |",
                      "|" + "---|" * (len(servers) + 1)] + rows + [""]
    if missing:
        lines += ["## Missing figures (errors)", ""] + [f"- {m}" for m in missing] + [""]
    if nas:
        nas = list(dict.fromkeys(nas))  # one line per server and reason
        lines += ["## Not available", ""] + [f"- {m}" for m in nas] + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Parameters", "", "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in params] + [""]
    lines += ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info] + [""]
    lines += ["## Raw run values", "", "| figure | server | rounds |", "|---|---|---|"]
    for fig in figures:
        for name, label in servers:
            v = results.get(name, {}).get(fig["key"])
            if isinstance(v, list) and v:
                runs = ", ".join(f"{x:.4g}" for x in v)
                lines.append(f"| {fig['title']} | {label} | {runs} |")
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return missing


def write_chart(path: str, *, title: str, figures: list[dict], servers: list[tuple[str, str]],
                results: dict) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    base = results.get(BASELINE, {})
    others = [(n, lbl) for n, lbl in servers if n != BASELINE]
    figs = [f for f in figures
            if any(ratio(results.get(n, {}).get(f["key"]), base.get(f["key"])) for n, _ in others)]
    others = [(n, lbl) for n, lbl in others
              if any(ratio(results.get(n, {}).get(f["key"]), base.get(f["key"])) for f in figs)]
    if not figs or not others:
        return False
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(figs) + 3), 6))
    width = 0.8 / len(others)
    for si, (name, label) in enumerate(others):
        xs, ys = [], []
        for fi, f in enumerate(figs):
            r = ratio(results.get(name, {}).get(f["key"]), base.get(f["key"]))
            if r is not None and r > 0:
                xs.append(fi + (si - (len(others) - 1) / 2) * width)
                ys.append(r)
        ax.bar(xs, ys, width=width, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(figs)))
    ax.set_xticklabels([f"{f['short']} {'↑' if f['better'] == 'higher' else '↓'}" for f in figs],
                       rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("ratio to plain WsgiDAV (log scale)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
