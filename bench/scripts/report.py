#!/usr/bin/env python3
"""Tables and plots from a compare run (bench/scripts/compare.sh's JSON lines).

Prints Markdown tables (medians of the repetitions, with min-max) and writes two SVG plots
beside bench/RESULTS.md: server CPU per viewer-second against viewers for each contender, and
shardcast's HTTP-TS ingest-to-viewer latency percentiles at each viewer count. Standard library
only, so it runs wherever the bench runs.

Usage: bench/scripts/report.py RESULTS.jsonl [PLOT_DIR]   (PLOT_DIR default: bench, beside RESULTS.md)
"""
import json
import math
import os
import statistics
import sys

med = statistics.median


def load(path):
    head, runs, errors = None, [], []
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "machine" in r:
            head = r
        elif "error" in r:
            errors.append(r)
        elif "run" in r:
            runs.append(r)
        # other lines (a browser's latency samples) are the script's own to summarise
    return head, runs, errors


def per_viewer_ms(run, cpu):
    viewers = run.get("connected", run.get("started", 0))
    return cpu * 1000 / max(viewers * run["window_s"], 1e-9)


def figures(r):
    run = r["run"]
    gib = run["bytes"] / 2**30
    server, client = run["server_cpu_s"], run["client_cpu_s"]
    viewers = run.get("connected", run.get("started", 0))
    return {
        "srv_ms": per_viewer_ms(run, server),
        "both_ms": per_viewer_ms(run, server + client),
        "srv_gib": server / gib if gib else float("nan"),
        "both_gib": (server + client) / gib if gib else float("nan"),
        "rss_mib": (run["server_rss"] or 0) / 2**20,
        "viewers": viewers,
        "mbit": run["gbit_per_s"] * 1000 / max(viewers, 1),
    }


def fmt_range(values, digits=4):
    return f"{med(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def groups(runs, protocol):
    keys = []
    for r in runs:
        k = (r["n"], r["contender"])
        if r["protocol"] == protocol and k not in keys:
            keys.append(k)
    for n, contender in sorted(keys):
        yield n, contender, [r for r in runs if r["protocol"] == protocol and r["n"] == n and r["contender"] == contender]


def hls_table(runs):
    print("\n| viewers | contender | server ms per viewer-second (median, min-max) | server+client ms per viewer-s | server s/GiB | server+client s/GiB | Mbit/s per viewer | server RSS MiB | missed / late / 404 / 5xx | segment fetch p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, contender, rs in groups(runs, "hls"):
        f = [figures(r) for r in rs]
        bad = [sum(r["run"][k] for r in rs) for k in ("missed", "late", "listed_404", "status_5xx")]
        p99 = med(r["run"]["fetch_us"]["p99"] / 1000 for r in rs)
        print(f"| {n} | {contender} | {fmt_range([x['srv_ms'] for x in f])} | {med(x['both_ms'] for x in f):.4f} | "
              f"{med(x['srv_gib'] for x in f):.3f} | {med(x['both_gib'] for x in f):.3f} | {med(x['mbit'] for x in f):.2f} | "
              f"{med(x['rss_mib'] for x in f):.1f} | {' / '.join(map(str, bad))} | {p99:.1f} |")


def ts_table(runs):
    print("\n| viewers | contender | server ms per viewer-second (median, min-max) | server+client ms per viewer-s | server s/GiB | server+client s/GiB | Mbit/s per viewer | server RSS MiB | latency p50 / p99 / p99.9 / max ms | gaps / disconnects |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n, contender, rs in groups(runs, "ts"):
        f = [figures(r) for r in rs]
        lat = "n/a (static file)"
        if not contender.startswith("nginx"):
            q = {k: med(r["run"]["latency_us"][k] for r in rs) / 1000 for k in ("p50", "p99", "p999", "max")}
            lat = f"{q['p50']:.1f} / {q['p99']:.1f} / {q['p999']:.1f} / {q['max']:.1f}"
        gaps = sum(r["run"]["gaps"] for r in rs)
        gone = sum(r["run"]["disconnected"] for r in rs)
        print(f"| {n} | {contender} | {fmt_range([x['srv_ms'] for x in f])} | {med(x['both_ms'] for x in f):.4f} | "
              f"{med(x['srv_gib'] for x in f):.3f} | {med(x['both_gib'] for x in f):.3f} | {med(x['mbit'] for x in f):.2f} | "
              f"{med(x['rss_mib'] for x in f):.1f} | {lat} | {gaps} / {gone} |")


def ratios(runs, protocol, ours, theirs):
    present = {r["contender"] for r in runs if r["protocol"] == protocol}
    if ours not in present or theirs not in present:
        return
    print(f"\n{protocol}: {ours}'s server CPU per viewer-second over {theirs}'s (median of each):")
    for n in sorted({r["n"] for r in runs if r["protocol"] == protocol}):
        a = [figures(r)["srv_ms"] for r in runs if r["protocol"] == protocol and r["n"] == n and r["contender"] == ours]
        b = [figures(r)["srv_ms"] for r in runs if r["protocol"] == protocol and r["n"] == n and r["contender"] == theirs]
        if not (a and b):
            continue
        # The same repetition's runs are minutes apart at most: their ratio leaves out whatever
        # the machine did between repetitions.
        paired = []
        for rep in sorted({r.get("rep") for r in runs if r["protocol"] == protocol and r["n"] == n}):
            x = [figures(r)["srv_ms"] for r in runs if r["protocol"] == protocol and r["n"] == n
                 and r["contender"] == ours and r.get("rep") == rep]
            y = [figures(r)["srv_ms"] for r in runs if r["protocol"] == protocol and r["n"] == n
                 and r["contender"] == theirs and r.get("rep") == rep]
            if x and y and y[0] > 0:
                paired.append(x[0] / y[0])
        line = f"- {n} viewers: {med(a) / med(b):.2f}x"
        if len(paired) > 1:
            line += (f"; repetition by repetition {med(paired):.2f}x (median of {len(paired)}, "
                     f"{min(paired):.2f}-{max(paired):.2f})")
        print(line)


def segmenting(runs):
    v = [r["ffmpeg_ms_per_s"] for r in runs if "ffmpeg_ms_per_s" in r]
    if v:
        print(f"\nffmpeg's HLS segmenting for nginx (-c copy): {med(v):.1f} ms of CPU per second (median over "
              f"all runs), not counted in nginx's figures; shardcast's figures include its own ingest and "
              f"segmenting.")


def memory(runs):
    idle = [r for r in runs if r.get("server_rss_idle") and r["run"]["server_rss"]]
    # Before each contender's first run: the server had had no viewer yet (allocators keep
    # what viewers freed, so the RSS before later runs is not idle).
    fresh = {}
    for r in idle:
        fresh.setdefault((r["protocol"], r["contender"]), r["server_rss_idle"])
    if idle:
        print("\nResident memory per viewer: the server's RSS at the end of the window less its RSS just "
              "before the viewers came, over the viewers (median of runs; an allocator keeps some of what "
              "earlier viewers freed), and less its RSS before the contender's first run:")
        for key in sorted({(r["protocol"], r["contender"], r["n"]) for r in idle}):
            rs = [r for r in idle if (r["protocol"], r["contender"], r["n"]) == key]
            per = med((r["run"]["server_rss"] - r["server_rss_idle"]) / r["n"] / 1024 for r in rs)
            first = med((r["run"]["server_rss"] - fresh[key[:2]]) / r["n"] / 1024 for r in rs)
            print(f"- {key[0]} {key[1]}, {key[2]} viewers: {per:.1f} KiB per viewer, {first:.1f} against the "
                  f"first idle RSS ({med(r['run']['server_rss'] for r in rs) / 2**20:.1f} MiB in all)")
    print("\nResident memory per viewer (shardcast, from the RSS at the smallest and largest N):")
    for protocol in ("hls", "ts"):
        pts = {}
        for r in runs:
            if r["protocol"] == protocol and r["contender"] == "shardcast" and r["run"]["server_rss"]:
                pts.setdefault(r["n"], []).append(r["run"]["server_rss"])
        if len(pts) >= 2:
            lo, hi = min(pts), max(pts)
            per = (med(pts[hi]) - med(pts[lo])) / (hi - lo) / 1024
            print(f"- {protocol}: {per:.1f} KiB per viewer between {lo} and {hi} viewers ({med(pts[hi]) / 2**20:.1f} MiB at {hi})")


# --- SVG -----------------------------------------------------------------------------------

COLORS = {"hls shardcast": "#1f77b4", "hls nginx": "#ff7f0e", "ts shardcast": "#2ca02c", "ts nginx-static": "#d62728",
          "ts floor-uring": "#9467bd", "ts floor-epoll": "#8c564b"}


def svg_lines(series, title, ylabel, path):
    """series: {name: [(x, y), ...]} with x on a log scale."""
    w, h, left, right, top, bottom = 640, 400, 70, 170, 40, 50
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ys = [y for pts in series.values() for _, y in pts]
    if not xs or not ys:
        return
    lx0, lx1 = math.log10(min(xs)), math.log10(max(xs))
    if lx1 == lx0:
        lx1 = lx0 + 1
    ymax = max(ys) * 1.15 or 1
    X = lambda x: left + (math.log10(x) - lx0) / (lx1 - lx0) * (w - left - right)
    Y = lambda y: h - bottom - y / ymax * (h - top - bottom)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
           f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">viewers (log scale)</text>',
           f'<text x="16" y="{(top + h - bottom) / 2}" text-anchor="middle" transform="rotate(-90 16 {(top + h - bottom) / 2})">{ylabel}</text>']
    for x in xs:
        out.append(f'<line x1="{X(x):.1f}" y1="{h - bottom}" x2="{X(x):.1f}" y2="{h - bottom + 5}" stroke="black"/>')
        out.append(f'<text x="{X(x):.1f}" y="{h - bottom + 18}" text-anchor="middle">{x}</text>')
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{left - 5}" y1="{Y(y):.1f}" x2="{w - right}" y2="{Y(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{Y(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
    for k, (name, pts) in enumerate(sorted(series.items())):
        color = COLORS.get(name, "#555")
        pts = sorted(pts)
        d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in pts:
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3" fill="{color}"/>')
        ly = top + 10 + 18 * k
        out.append(f'<line x1="{w - right + 10}" y1="{ly}" x2="{w - right + 30}" y2="{ly}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{w - right + 35}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")
    print(f"\nwrote {path}")


def svg_latency(runs, path):
    """Grouped bars: p50, p99, p99.9, max of shardcast HTTP-TS latency at each N."""
    data = {}
    for r in runs:
        if r["protocol"] == "ts" and r["contender"] == "shardcast":
            data.setdefault(r["n"], []).append(r["run"]["latency_us"])
    if not data:
        return
    keys = [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]
    ns = sorted(data)
    vals = {n: [med(l[k] for l in data[n]) / 1000 for k, _ in keys] for n in ns}
    w, h, left, bottom, top = 640, 380, 70, 60, 40
    ymax = max(max(v) for v in vals.values()) * 1.15 or 1
    group_w = (w - left - 20) / len(ns)
    bar_w = group_w / (len(keys) + 1)
    shades = ["#9ecae1", "#4292c6", "#08519c", "#08306b"]
    Y = lambda y: h - bottom - y / ymax * (h - top - bottom)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="20" text-anchor="middle" font-size="14">HTTP-TS ingest-to-viewer latency (shardcast), ms</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - 20}" y2="{h - bottom}" stroke="black"/>']
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{left - 5}" y1="{Y(y):.1f}" x2="{w - 20}" y2="{Y(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{Y(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
    for g, n in enumerate(ns):
        x0 = left + g * group_w + bar_w / 2
        for k, v in enumerate(vals[n]):
            x = x0 + k * bar_w
            out.append(f'<rect x="{x:.1f}" y="{Y(v):.1f}" width="{bar_w * 0.9:.1f}" height="{h - bottom - Y(v):.1f}" fill="{shades[k]}"/>')
            out.append(f'<text x="{x + bar_w * 0.45:.1f}" y="{Y(v) - 3:.1f}" text-anchor="middle" font-size="10">{v:.1f}</text>')
        out.append(f'<text x="{x0 + bar_w * 2:.1f}" y="{h - bottom + 18}" text-anchor="middle">{n} viewers</text>')
    for k, (_, label) in enumerate(keys):
        out.append(f'<rect x="{left + 10 + 80 * k}" y="{h - 25}" width="12" height="12" fill="{shades[k]}"/>')
        out.append(f'<text x="{left + 26 + 80 * k}" y="{h - 15}">{label}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")
    print(f"wrote {path}")


def main():
    path = sys.argv[1]
    plots = sys.argv[2] if len(sys.argv) > 2 else "bench"
    head, runs, errors = load(path)
    if head:
        m = head["machine"]
        print(f"machine: nproc {m['nproc']}, {m['cpu']}, Linux {m['kernel']}; date {head['date']}")
        if "pattern" in head:
            print(f"HLS players' requests: {head['pattern']}")
        if "shmem_enabled" in head:
            print(f"shmem_enabled (shardcast's segment memfds): {head['shmem_enabled']}; "
                  f"nginx's tmpfs huge=: {head['nginx_tmpfs_huge']}")
        if "rate" in head:
            print(f"stream: {head['rate'] / 1e6:.2f} Mbit/s mux")
        if "flush_ms" in head:
            print(f"flush_interval (shardcast and the write floors): {head['flush_ms']} ms")
    hls_table(runs)
    ratios(runs, "hls", "shardcast", "nginx")
    # compare.sh with BEFORE_BIN: an earlier build beside.
    ratios(runs, "hls", "shardcast-before", "nginx")
    ratios(runs, "hls", "shardcast", "shardcast-before")
    ratios(runs, "hls", "shardcast-folios", "nginx")
    ratios(runs, "hls", "shardcast-folios", "shardcast")
    ratios(runs, "hls", "nginx-huge", "nginx")
    ratios(runs, "hls", "shardcast-folios", "nginx-huge")
    # bench/scripts/tls.sh: the same over TLS, and what TLS adds to each.
    ratios(runs, "hls", "shardcast-tls", "nginx-tls")
    ratios(runs, "hls", "shardcast-tls", "shardcast")
    ratios(runs, "hls", "nginx-tls", "nginx")
    ts_table(runs)
    ratios(runs, "ts", "shardcast", "nginx-static")
    ratios(runs, "ts", "shardcast-before", "nginx-static")
    ratios(runs, "ts", "shardcast", "shardcast-before")
    # The write floor (issue 22, part 2): the same stream written at the same rate, nothing else.
    ratios(runs, "ts", "shardcast", "floor-uring")
    ratios(runs, "ts", "shardcast", "floor-epoll")
    ratios(runs, "ts", "floor-uring", "floor-epoll")
    memory(runs)
    segmenting(runs)
    for e in errors:
        print(f"\nrun failed: {e['protocol']} {e['contender']} N={e['n']} rep {e['rep']}: {e['error']}")
    os.makedirs(plots, exist_ok=True)
    series = {}
    for r in runs:
        series.setdefault(f"{r['protocol']} {r['contender']}", {}).setdefault(r["n"], []).append(figures(r)["srv_ms"])
    svg_lines({k: [(n, med(v)) for n, v in pts.items()] for k, pts in series.items()},
              "Server CPU per viewer-second (median of runs)", "ms per viewer-second",
              os.path.join(plots, "cpu-per-viewer.svg"))
    svg_latency(runs, os.path.join(plots, "latency-http-ts.svg"))


if __name__ == "__main__":
    main()
