#!/usr/bin/env python3
"""Summarise a bench/run.sh run: medians, ratios against direct and nginx, target checks.

    report.py WORKDIR RESULTS_MD

Reads WORKDIR/results.tsv (scenario, metric, target, run, value), WORKDIR/facts.tsv (key, value)
and WORKDIR/notes.txt (free-form warnings gathered by run.sh); writes the markdown summary to
RESULTS_MD and to stdout. Exit status 3 when STRICT=1 and a check failed.

To add a figure: record it from run.sh with `record SCENARIO METRIC TARGET RUN VALUE`, and add the
metric to METRICS below (and a line to CHECKS if it has a target). Any target whose name starts
with "wharf" (e.g. "wharf-events") is compared with "direct" and "nginx" and checked.
"""

import collections
import os
import statistics
import sys

# metric -> (label, unit, higher_is_better, decimals). The label may use {facts}.
METRICS = collections.OrderedDict(
    [
        ("blob_get", ("GET {blob_mib} MiB blob (curl)", "MiB/s", True, 0)),
        ("push", ("skopeo push {image_mib} MiB image", "MiB/s", True, 1)),
        ("pull", ("skopeo pull {image_mib} MiB image", "MiB/s", True, 1)),
        ("manifest_rps", ("manifest GET, wrk -c{wrk_connections} -t{wrk_threads} -d{wrk_duration}", "req/s", True, 0)),
        ("manifest_p99", ("manifest GET p99 latency", "ms", False, 2)),
        # CPU time the proxy process(es) used (user+system), per unit of work: steadier than
        # throughput on a machine that is not quiet. "direct" has no proxy.
        ("blob_cpu", ("proxy CPU per GiB of blob GET", "ms", False, 0)),
        ("push_cpu", ("proxy CPU per GiB pushed", "ms", False, 0)),
        ("pull_cpu", ("proxy CPU per GiB pulled", "ms", False, 0)),
        ("manifest_cpu", ("proxy CPU per manifest GET", "µs", False, 1)),
    ]
)

# (metric, baseline, minimum ratio wharf/baseline)
CHECKS = [
    ("blob_get", "direct", 0.90),
    ("blob_get", "nginx", 1.00),
    ("push", "direct", 0.98),
    ("pull", "direct", 0.98),
    ("manifest_rps", "direct", 0.97),
]
RSS_LIMIT_MIB = 32.0


def read_tsv(path, ncols):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) < ncols:
                parts += [""] * (ncols - len(parts))
            rows.append(parts[:ncols] if ncols > 1 else parts)
    return rows


def fmt(v, decimals):
    if v is None:
        return "—"
    return f"{v:,.{decimals}f}"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    work, out_path = sys.argv[1], sys.argv[2]
    facts = collections.OrderedDict()
    for k, v in read_tsv(os.path.join(work, "facts.tsv"), 2):
        facts[k] = v
    values = collections.defaultdict(list)  # (metric, target) -> [values in run order]
    for _scenario, metric, target, _run, value in read_tsv(os.path.join(work, "results.tsv"), 5):
        try:
            values[(metric, target)].append(float(value))
        except ValueError:
            pass
    notes = []
    notes_path = os.path.join(work, "notes.txt")
    if os.path.exists(notes_path):
        with open(notes_path) as f:
            notes = [l.rstrip("\n") for l in f if l.strip()]

    targets = facts.get("targets", "direct nginx wharf").split()
    wharfs = [t for t in targets if t.startswith("wharf")]
    baselines = [b for b in ("direct", "nginx") if b in targets]

    def med(metric, target):
        if metric == "rss":
            return peak_rss(target)
        v = values.get((metric, target))
        return statistics.median(v) if v else None

    def peak_rss(target):
        # VmHWM is refreshed lazily by the kernel and can read lower later: take the largest of
        # all snapshots (idle, after each scenario, at the end).
        v = [x for (m, t), xs in values.items() if t == target and m.startswith("rss") for x in xs]
        return max(v) if v else None

    label_args = {k: facts.get(k, "?") for k in
                  ("blob_mib", "image_mib", "wrk_connections", "wrk_threads", "wrk_duration")}

    lines = []
    smoke = facts.get("smoke_reasons", "")
    title = facts.get("title", "wharf benchmark")
    lines.append(f"## {title} — {facts.get('date', '?')}")
    lines.append("")
    if smoke:
        lines.append(f"> **SMOKE RUN — NOT A MEASUREMENT** ({smoke}). Do not quote these figures.")
        lines.append("")

    lines.append("### Machine")
    lines.append("")
    for key, name in [
        ("cpu_model", "CPU"), ("nproc", "nproc"), ("kernel", "kernel"), ("memory", "memory"),
        ("loadavg_start", "load average at start"), ("loadavg_before", "load average before measuring"),
        ("cpu_busy_before", "CPU busy before measuring (1 s sample)"),
        ("cpu_foreign", "CPU used by others while measuring"), ("fast_storage", "registry storage"),
        ("wharf_data_dir", "wharf data_dir"),
        ("wharf_rev", "wharf"), ("rustc", "rustc"), ("nginx", "nginx"), ("registry", "registry"),
        ("skopeo", "skopeo"), ("wrk", "wrk"), ("curl", "curl"),
    ]:
        if key in facts:
            lines.append(f"- {name}: {facts[key]}")
    lines.append(
        f"- parameters: BLOB_MIB={facts.get('blob_mib')} IMAGE_MIB={facts.get('image_mib')} "
        f"IMAGE_LAYERS={facts.get('image_layers')} RUNS={facts.get('runs')} "
        f"WRK_DURATION={facts.get('wrk_duration')} ACCESS_LOGS={facts.get('access_logs')} "
        f"nginx workers={facts.get('nginx_workers', '?')} wharf extra YAML={facts.get('wharf_extra_yaml') or 'none'}"
    )
    lines.append("")

    # Results table: medians, then ratios for every wharf target.
    head = ["what"] + targets
    for w in wharfs:
        head += [f"{w}/{b}" for b in baselines]
    head += ["target", "ok"]
    lines.append(f"### Results (median of {facts.get('runs', '?')})")
    lines.append("")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    failed = []
    checked = 0
    known = list(METRICS)
    # Figures recorded by run.sh that METRICS does not know yet still get a row.
    extra = sorted({m for (m, _t) in values if m not in METRICS and not m.startswith(("rss", "errors_"))})
    for metric in known + extra:
        if not any((metric, t) in values for t in targets):
            continue
        label, unit, higher, dec = METRICS.get(metric, (metric, "", True, 2))
        label = label.format(**label_args)
        row = [f"{label} ({unit})" if unit else label]
        for t in targets:
            row.append(fmt(med(metric, t), dec))
        target_txt, ok_txt = [], []
        for w in wharfs:
            for b in baselines:
                wv, bv = med(metric, w), med(metric, b)
                row.append(f"{wv / bv:.3f}" if wv is not None and bv else "—")
            for (m, b, minimum) in CHECKS:
                if m != metric or b not in baselines:
                    continue
                wv, bv = med(metric, w), med(metric, b)
                target_txt.append(f"{w}/{b} ≥ {minimum:.2f}" if len(wharfs) > 1 else f"≥ {minimum:.2f}× {b}")
                if wv is None or not bv:
                    ok_txt.append("n/a")
                    continue
                checked += 1
                ratio = wv / bv
                if ratio >= minimum:
                    ok_txt.append("yes")
                else:
                    ok_txt.append("**NO**")
                    failed.append(f"{label}: {w}/{b} = {ratio:.3f} < {minimum:.2f}")
        row.append("; ".join(target_txt) or ("lower is better" if not higher else ""))
        row.append(" ".join(ok_txt))
        lines.append("| " + " | ".join(row) + " |")

    # Peak RSS row: registry under "direct", nginx's largest worker under "nginx".
    rss_cells = {}
    if ("rss", "registry") in values and "direct" in targets:
        rss_cells["direct"] = f"registry {fmt(med('rss', 'registry'), 1)}"
    if ("rss", "nginx") in values and "nginx" in targets:
        cell = f"worker {fmt(med('rss', 'nginx'), 1)}"
        if ("rss", "nginx-master") in values:
            cell += f" (master {fmt(med('rss', 'nginx-master'), 1)}, {int(med('rss', 'nginx-workers') or 0)} workers)"
        rss_cells["nginx"] = cell
    for w in wharfs:
        if ("rss", w) in values:
            rss_cells[w] = fmt(med("rss", w), 1)
    if rss_cells:
        row = ["peak RSS, VmHWM (MiB)"] + [rss_cells.get(t, "—") for t in targets]
        ok_txt = []
        for w in wharfs:
            for b in baselines:  # only wharf/nginx means something: "direct" has no proxy
                wv, bv = med("rss", w), med("rss", "nginx") if b == "nginx" else None
                row.append(f"{wv / bv:.2f}" if wv is not None and bv else "—")
            wv = med("rss", w)
            if wv is None:
                ok_txt.append("n/a")
                continue
            checked += 1
            if wv <= RSS_LIMIT_MIB:
                ok_txt.append("yes")
            else:
                ok_txt.append("**NO**")
                failed.append(f"peak RSS of {w}: {wv:.1f} MiB > {RSS_LIMIT_MIB:.0f} MiB")
        row += [f"wharf ≤ {RSS_LIMIT_MIB:.0f} MiB", " ".join(ok_txt)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if failed:
        lines.append(f"**{len(failed)} of {checked} checks missed:**")
        lines.extend(f"- {f}" for f in failed)
    else:
        lines.append(f"All {checked} checks met.")
    lines.append("")

    # Every run, so the spread is visible.
    lines.append("### Every run")
    lines.append("")
    lines.append("| metric | target | runs | min | max | spread |")
    lines.append("|---|---|---|---|---|---|")
    for (metric, target), vs in sorted(values.items()):
        dec = METRICS.get(metric, (None, None, None, 2))[3]
        spread = (max(vs) - min(vs)) / statistics.median(vs) * 100 if len(vs) > 1 and statistics.median(vs) else 0
        lines.append(
            f"| {metric} | {target} | {', '.join(fmt(v, dec) for v in vs)} | {fmt(min(vs), dec)} | "
            f"{fmt(max(vs), dec)} | {spread:.0f}% |"
        )
    lines.append("")
    if notes:
        lines.append("### Warnings and oddities seen during the run")
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
        lines.append("")

    text = "\n".join(lines)
    with open(out_path, "w") as f:
        f.write(text)
    print(text)
    if failed and os.environ.get("STRICT") == "1":
        sys.exit(3)


if __name__ == "__main__":
    main()
