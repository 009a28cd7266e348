#!/usr/bin/env python3
"""Summarise a bench/run.sh run: medians, ratios against direct and nginx, target checks.

    report.py WORKDIR RESULTS_MD

Reads WORKDIR/results.tsv (scenario, metric, target, run, value), WORKDIR/facts.tsv (key, value)
and WORKDIR/notes.txt (free-form warnings gathered by run.sh); writes the markdown summary to
RESULTS_MD and to stdout. Exit status 3 when STRICT=1 and a check failed.

To add a figure: record it from run.sh with `record SCENARIO METRIC TARGET RUN VALUE`, and add the
metric to METRICS below (and a line to CHECKS if it has a target). Any target whose name starts
with "wharf" (e.g. "wharf-events") is compared with "direct" and "nginx" and checked.

The event scenarios (push_latency, deliveries, delivery_latency, manifest_events, target_down)
measure wharf instances of their own: their metrics are listed in EVENT_TABLES (one table per
scenario, with its own columns) and their targets in EVENT_CHECKS.
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
        ("blob_registry_cpu", ("registry CPU per GiB of blob GET", "ms", False, 0)),
        ("push_registry_cpu", ("registry CPU per GiB pushed", "ms", False, 0)),
        ("pull_registry_cpu", ("registry CPU per GiB pulled", "ms", False, 0)),
        ("push_client_cpu", ("client (skopeo) CPU per GiB pushed", "ms", False, 0)),
        ("pull_client_cpu", ("client (skopeo) CPU per GiB pulled", "ms", False, 0)),
        ("manifest_cpu", ("proxy CPU per manifest GET", "µs", False, 1)),
        ("manifest_registry_cpu", ("registry CPU per manifest GET", "µs", False, 1)),
        ("manifest_client_cpu", ("client (wrk) CPU per manifest GET", "µs", False, 1)),
        ("head_rps", ("manifest HEAD, ab -k -i -c{wrk_connections} -t{wrk_duration}", "req/s", True, 0)),
        ("head_p99", ("manifest HEAD p99 latency", "ms", False, 2)),
        ("head_cpu", ("proxy CPU per manifest HEAD", "µs", False, 1)),
        ("head_registry_cpu", ("registry CPU per manifest HEAD", "µs", False, 1)),
        ("head_client_cpu", ("client (ab) CPU per manifest HEAD", "µs", False, 1)),
        ("tags_rps", ("tag list GET, wrk -c{wrk_connections} -t{wrk_threads} -d{wrk_duration}", "req/s", True, 0)),
        ("tags_p99", ("tag list GET p99 latency", "ms", False, 2)),
        ("tags_cpu", ("proxy CPU per tag list GET", "µs", False, 1)),
        ("tags_registry_cpu", ("registry CPU per tag list GET", "µs", False, 1)),
        ("tags_client_cpu", ("client (wrk) CPU per tag list GET", "µs", False, 1)),
    ]
)

# The event scenarios (run.sh: push_latency deliveries delivery_latency manifest_events
# target_down) measure wharf instances of their own; each gets a table of its own:
# (scenario, title, targets, [(metric, label, unit, higher_is_better, decimals)], ratio columns
# (numerator, denominator), difference columns (minuend, subtrahend)).
EVENT_TABLES = [
    ("push_latency", "Manifest PUT latency: events on vs off (a new tag per PUT, small image)",
     ["direct", "wharf-noevents", "wharf"],
     [(f"put_{w}_c{c}", f"PUT {w} wrk -c{c}", u, hb, d)
      for c in (1, 4) for (w, u, hb, d) in (("p50", "ms", False, 3), ("p99", "ms", False, 3), ("rps", "req/s", True, 0))],
     [("wharf", "wharf-noevents"), ("wharf", "direct")], [("wharf", "wharf-noevents")]),
    ("deliveries", "Outbox drain: dead deliveries redelivered at once to a fast loopback receiver",
     ["wharf-deliv"],
     [("deliv_n", "deliveries per run", "", True, 0),
      ("deliv_rate", "deliveries/s, redeliver call → receiver has all (wall)", "/s", True, 0),
      ("deliv_rate_recv", "deliveries/s at the receiver (first → last arrival)", "/s", True, 0),
      ("deliv_redeliver_ms", "of which the redeliver API call", "ms", False, 0),
      ("deliv_cpu_pct", "wharf CPU during the drain", "% of one core", False, 0),
      ("deliv_cpu_us", "wharf CPU per delivery", "µs", False, 1),
      ("deliv_recv_cpu_pct", "receiver CPU during the drain", "% of one core", False, 0),
      ("deliv_fail_rate", "first attempts/s to the closed port (while the GETs ran)", "/s", True, 0),
      ("deliv_fail_cpu", "wharf CPU per pull event + failed attempt", "µs", False, 1)],
     [], []),
    ("delivery_latency", "Event-to-delivery latency, receivers up, paced load",
     ["wharf-hook"],
     [("dl_push_rate", "pushes/s achieved", "/s", True, 0),
      ("dl_pull_rate", "pulls/s achieved", "/s", True, 0),
      ("dl_push_p50", "push event → delivery p50", "ms", False, 0),
      ("dl_push_p99", "push event → delivery p99", "ms", False, 0),
      ("dl_push_max", "push event → delivery max", "ms", False, 0),
      ("dl_pull_p50", "pull event → delivery p50", "ms", False, 0),
      ("dl_pull_p99", "pull event → delivery p99", "ms", False, 0),
      ("dl_pull_max", "pull event → delivery max", "ms", False, 0),
      ("dl_put_p50", "manifest PUT latency p50 (client)", "ms", False, 3),
      ("dl_get_p50", "manifest GET latency p50 (client)", "ms", False, 3),
      ("dl_cpu_pct", "wharf CPU", "% of one core", False, 1)],
     [], []),
    ("manifest_events", "Manifest GET with pull events delivered to a receiver (wrk -c{wrk_connections} -t{wrk_threads} -d{wrk_duration})",
     ["direct", "wharf", "wharf-hook"],
     [("mev_rps", "manifest GET", "req/s", True, 0),
      ("mev_p99", "manifest GET p99", "ms", False, 2),
      ("mev_cpu", "proxy CPU per GET (wharf-hook: incl. its deliveries)", "µs", False, 1),
      ("mev_recv_cpu", "receiver CPU per GET", "µs", False, 1),
      ("mev_registry_cpu", "registry CPU per GET", "µs", False, 1),
      ("mev_client_cpu", "client (wrk) CPU per GET", "µs", False, 1),
      ("mev_backlog", "deliveries still open when wrk ended", "", False, 0),
      ("mev_drain_s", "time to deliver them", "s", False, 2)],
     [("wharf-hook", "direct"), ("wharf", "direct"), ("wharf-hook", "wharf")], []),
    ("target_down", "Registry latency while the webhook target is up / down / blackholed (wrk -c{td_connections})",
     ["wharf-up", "wharf-down", "wharf-blackhole"],
     [("td_get_p50", "manifest GET p50", "ms", False, 3),
      ("td_get_p99", "manifest GET p99", "ms", False, 3),
      ("td_get_rps", "manifest GET", "req/s", True, 0),
      ("td_put_p50", "manifest PUT p50", "ms", False, 3),
      ("td_put_p99", "manifest PUT p99", "ms", False, 3),
      ("td_put_rps", "manifest PUT", "req/s", True, 0),
      ("td_cpu", "wharf CPU per request (incl. delivery work)", "µs", False, 1),
      ("td_backlog_start", "open deliveries when the instance started", "", False, 0),
      ("td_backlog_end", "open deliveries at the end of its run", "", False, 0)],
     [("wharf-down", "wharf-up"), ("wharf-blackhole", "wharf-up")], []),
]
EVENT_TABLES.append(
    ("store", "The store: embedded SQLite vs PostgreSQL with 1, 2 and 3 replicas on one database",
     ["st-sqlite", "st-pg1", "st-pg2", "st-pg3"],
     [("st_drain_n", "deliveries drained per run", "", True, 0),
      ("st_drain_rate", "outbox drain, redeliver → receiver has all (wall)", "/s", True, 0),
      ("st_drain_cpu", "wharf CPU per delivery (all replicas)", "µs", False, 1),
      ("st_drain_pg_cpu", "PostgreSQL CPU per delivery", "µs", False, 1),
      ("st_put_p50_c1", "manifest PUT p50, events on, wrk -c1", "ms", False, 3),
      ("st_put_p99_c1", "manifest PUT p99, events on, wrk -c1", "ms", False, 3),
      ("st_put_p50_c4", "manifest PUT p50, events on, wrk -c4", "ms", False, 3),
      ("st_put_p99_c4", "manifest PUT p99, events on, wrk -c4", "ms", False, 3),
      ("st_put_cpu_c1", "wharf CPU per PUT, its delivery included, -c1", "µs", False, 0),
      ("st_put_pg_cpu_c1", "PostgreSQL CPU per PUT, its delivery included, -c1", "µs", False, 0),
      ("st_put_commit_c1", "  of which waiting for the event's commit (mean), -c1", "ms", False, 3),
      ("st_put_commit_c4", "  of which waiting for the event's commit (mean), -c4", "ms", False, 3),
      ("st_putq_p50_c1", "manifest PUT p50, events recorded, no policy, -c1", "ms", False, 3),
      ("st_putq_p50_c4", "manifest PUT p50, events recorded, no policy, -c4", "ms", False, 3),
      ("st_putq_commit_c1", "  of which waiting for the event's commit (mean), -c1", "ms", False, 3),
      ("st_putq_commit_c4", "  of which waiting for the event's commit (mean), -c4", "ms", False, 3),
      ("st_dl_p50", "push event → delivery p50", "ms", False, 0),
      ("st_dl_p99", "push event → delivery p99", "ms", False, 0)],
     [("st-pg1", "st-sqlite"), ("st-pg2", "st-pg1"), ("st-pg3", "st-pg1")],
     [("st-pg1", "st-sqlite")]))
EVENT_TABLES.append(
    ("soak", "Soak: manifest GETs for {soak_duration} (wrk -c{wrk_connections}), every pull delivered to a receiver",
     ["wharf-soak"],
     [("soak_gets", "pulls answered 200", "", True, 0),
      ("soak_delivered", "deliveries the receiver got", "", True, 0),
      ("soak_rps", "manifest GET", "req/s", True, 0),
      ("soak_cpu", "wharf CPU per GET, incl. its delivery", "µs", False, 1),
      ("soak_backlog", "deliveries still open when wrk ended", "", False, 0),
      ("soak_drain_s", "time to deliver them", "s", False, 1),
      ("soak_store_mb", "store growth (database file)", "MB", False, 1),
      ("soak_bytes_per_event", "store bytes per delivered pull event", "B", False, 0),
      ("soak_rss_start", "RSS after the warm-up", "MiB", False, 1),
      ("soak_rss_peak", "RSS, highest sample", "MiB", False, 1),
      ("soak_rss_idle", "RSS after {soak_idle} s idle", "MiB", False, 1),
      ("soak_fds_start", "open fds at the start", "", False, 0),
      ("soak_fds_end", "open fds when the backlog was delivered", "", False, 0),
      ("soak_fds_idle", "open fds after {soak_idle} s idle", "", False, 0),
      ("soak_scrape_start_ms", "wharf CPU per /metrics scrape, before", "ms", False, 2),
      ("soak_scrape_end_ms", "wharf CPU per /metrics scrape, after", "ms", False, 2)],
     [], []))
EVENT_METRICS = {m[0] for table in EVENT_TABLES for m in table[3]}
EVENT_DECIMALS = {m[0]: m[4] for table in EVENT_TABLES for m in table[3]}

# Targets of the event scenarios: (label, kind, args, limit). kinds:
#   diff_max: med(metric, a) - med(metric, b) < limit          args = (metric, a, b)
#   min / max: med(metric, a) >= / <= limit                     args = (metric, a)
#   ratio_min / ratio_max: med(metric, a) / med(metric, b) >= / <= limit   args = (metric, a, b)
EVENT_CHECKS = [
    ("PUT p50 -c1: wharf (events on) − wharf (events off)", "diff_max", ("put_p50_c1", "wharf", "wharf-noevents"), 1.0),
    ("PUT p50 -c4: wharf (events on) − wharf (events off)", "diff_max", ("put_p50_c4", "wharf", "wharf-noevents"), 1.0),
    ("deliveries/s (wall, redeliver → all received)", "min", ("deliv_rate", "wharf-deliv"), 5000),
    ("PostgreSQL × 1: deliveries/s", "min", ("st_drain_rate", "st-pg1"), 5000),
    ("PostgreSQL × 2 drains faster than × 1", "ratio_min", ("st_drain_rate", "st-pg2", "st-pg1"), 1.0),
    ("PostgreSQL × 3 drains faster than × 1", "ratio_min", ("st_drain_rate", "st-pg3", "st-pg1"), 1.0),
    ("PUT p50 -c1: PostgreSQL − SQLite (ms)", "diff_max", ("st_put_p50_c1", "st-pg1", "st-sqlite"), 1.0),
    ("PUT p50 -c4: PostgreSQL − SQLite (ms)", "diff_max", ("st_put_p50_c4", "st-pg1", "st-sqlite"), 1.0),
    ("PostgreSQL: push event → delivery p50 (ms)", "max", ("st_dl_p50", "st-pg1"), 10),
    ("push event → delivery p50 (ms)", "max", ("dl_push_p50", "wharf-hook"), 10),
    ("pull event → delivery p50 (ms)", "max", ("dl_pull_p50", "wharf-hook"), 10),
    ("manifest GET req/s with events + delivery / direct", "ratio_min", ("mev_rps", "wharf-hook", "direct"), 0.90),
    ("soak: store bytes per delivered pull event", "max", ("soak_bytes_per_event", "wharf-soak"), 300),
    ("soak: peak RSS (MiB)", "max", ("soak_rss_peak", "wharf-soak"), 32),
    ("soak: RSS idle after the soak (MiB)", "max", ("soak_rss_idle", "wharf-soak"), 32),
    ("GET p50, target down / up", "ratio_max", ("td_get_p50", "wharf-down", "wharf-up"), 1.05),
    ("GET p99, target down / up", "ratio_max", ("td_get_p99", "wharf-down", "wharf-up"), 1.05),
    ("PUT p50, target down / up", "ratio_max", ("td_put_p50", "wharf-down", "wharf-up"), 1.05),
    ("GET p50, target blackholed / up", "ratio_max", ("td_get_p50", "wharf-blackhole", "wharf-up"), 1.05),
    ("GET p99, target blackholed / up", "ratio_max", ("td_get_p99", "wharf-blackhole", "wharf-up"), 1.05),
    ("PUT p50, target blackholed / up", "ratio_max", ("td_put_p50", "wharf-blackhole", "wharf-up"), 1.05),
]

# (metric, baseline, bound): wharf/baseline ≥ bound, or, for a metric where lower is better
# (CPU per request), wharf/baseline ≤ bound
CHECKS = [
    ("blob_get", "direct", 0.90),
    ("blob_get", "nginx", 1.00),
    ("push", "direct", 0.98),
    ("pull", "direct", 0.98),
    ("manifest_rps", "direct", 0.97),
    ("head_rps", "direct", 0.97),
    ("tags_rps", "direct", 0.97),
    ("manifest_cpu", "nginx", 1.00),
    ("head_cpu", "nginx", 1.00),
    ("tags_cpu", "nginx", 1.00),
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
    label_args["td_connections"] = "?"
    label_args["soak_duration"] = "?"
    label_args["soak_idle"] = "?"
    for kv in facts.get("events_params", "").split():
        k, _, v = kv.partition("=")
        label_args[k.lower()] = v

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
        ("cpu_reference", "machine speed"),
        ("cpu_foreign", "CPU used by others while measuring"), ("fast_storage", "registry storage"),
        ("wharf_data_dir", "wharf data_dir"),
        ("wharf_rev", "wharf"), ("wharf_sha256", "wharf binary sha256 (first 16)"), ("scenarios", "scenarios"),
        ("events_params", "event scenario parameters"), ("rustc", "rustc"), ("nginx", "nginx"), ("registry", "registry"),
        ("skopeo", "skopeo"), ("wrk", "wrk"), ("curl", "curl"), ("postgres", "postgres"),
        ("store-drain-receiver", "store drain's receiver"),
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
    extra = sorted({m for (m, _t) in values
                    if m not in METRICS and m not in EVENT_METRICS and not m.startswith(("rss", "errors_"))})
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
            for (m, b, bound) in CHECKS:
                if m != metric or b not in baselines:
                    continue
                wv, bv = med(metric, w), med(metric, b)
                op = "≥" if higher else "≤"
                target_txt.append(f"{w}/{b} {op} {bound:.2f}" if len(wharfs) > 1 else f"{op} {bound:.2f}× {b}")
                if wv is None or not bv:
                    ok_txt.append("n/a")
                    continue
                checked += 1
                ratio = wv / bv
                if (ratio >= bound) if higher else (ratio <= bound):
                    ok_txt.append("yes")
                else:
                    ok_txt.append("**NO**")
                    failed.append(f"{label}: {w}/{b} = {ratio:.3f}, target {op} {bound:.2f}")
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

    # The event scenarios: one table each, then their targets.
    event_targets = set()
    for scenario, title, ets, metrics, ratios, diffs in EVENT_TABLES:
        if not any((m[0], t) in values for m in metrics for t in ets):
            continue
        event_targets.update(ets)
        head = ["what"] + ets + [f"{a}/{b}" for a, b in ratios] + [f"{a} − {b}" for a, b in diffs]
        lines.append(f"### {scenario}: {title.format(**label_args)}")
        lines.append("")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for metric, label, unit, _higher, dec in metrics:
            if not any((metric, t) in values for t in ets):
                continue
            label = label.format(**label_args)
            row = [f"{label} ({unit})" if unit else label]
            row += [fmt(med(metric, t), dec) for t in ets]
            for a, b in ratios:
                av, bv = med(metric, a), med(metric, b)
                row.append(f"{av / bv:.3f}" if av is not None and bv else "—")
            for a, b in diffs:
                av, bv = med(metric, a), med(metric, b)
                row.append(f"{av - bv:+.{dec}f}" if av is not None and bv is not None else "—")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")

    ev_rows = []
    for label, kind, args, limit in EVENT_CHECKS:
        metric, a = args[0], args[1]
        av = med(metric, a)
        bv = med(metric, args[2]) if len(args) > 2 else None
        if av is None or (len(args) > 2 and bv is None):
            continue
        if kind == "min" and metric == "st_drain_rate" and "store-drain-receiver" in facts:
            # the 5,000/s floor is for a receiver that answers at once; a slow one bounds
            # the drain by its latency (what this run measures is the growth with replicas)
            ev_rows.append(f"| {label} | {av:,.0f} | not checked: the drain's receiver "
                           f"{facts['store-drain-receiver']} | — |")
            continue
        if kind == "diff_max":
            v, ok, tgt, shown = av - bv, av - bv < limit, f"< {limit:g} ms", f"{av - bv:+.3f} ms ({av:.3f} vs {bv:.3f})"
            # runs of the two targets alternate (run 1 of each, then run 2, …): the differences
            # run by run, which the machine's drift between runs moves less than the medians
            va, vb = values.get((metric, a), []), values.get((metric, args[2]), [])
            if len(va) == len(vb) > 1:
                shown += "; run by run " + ", ".join(f"{x - y:+.2f}" for x, y in zip(va, vb))
        elif kind == "min":
            v, ok, tgt, shown = av, av >= limit, f"≥ {limit:,g}", f"{av:,.0f}"
        elif kind == "max":
            v, ok, tgt, shown = av, av <= limit, f"≤ {limit:g}", f"{av:g}"
        elif kind == "ratio_min":
            v = av / bv if bv else 0
            ok, tgt, shown = v >= limit, f"≥ {limit:.2f}", f"{v:.3f} ({av:,.2f} / {bv:,.2f})"
        else:  # ratio_max
            v = av / bv if bv else float("inf")
            ok, tgt, shown = v <= limit, f"≤ {limit:.2f}", f"{v:.3f} ({av:,.3f} / {bv:,.3f})"
        checked += 1
        if not ok:
            failed.append(f"{label}: {shown}, target {tgt}")
        ev_rows.append(f"| {label} | {shown} | {tgt} | {'yes' if ok else '**NO**'} |")
    # peak RSS of every wharf instance the event scenarios started
    for t in sorted(event_targets):
        if not t.startswith("wharf") or t in wharfs:
            continue
        wv = peak_rss(t)
        if wv is None:
            continue
        checked += 1
        ok = wv <= RSS_LIMIT_MIB
        if not ok:
            failed.append(f"peak RSS of {t}: {wv:.1f} MiB > {RSS_LIMIT_MIB:.0f} MiB")
        ev_rows.append(f"| peak RSS of {t} (VmHWM) | {wv:.1f} MiB | ≤ {RSS_LIMIT_MIB:.0f} MiB | {'yes' if ok else '**NO**'} |")
    if ev_rows:
        lines.append("### Targets of the event scenarios (medians)")
        lines.append("")
        lines.append("| figure | measured | target | ok |")
        lines.append("|---|---|---|---|")
        lines.extend(ev_rows)
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
        dec = METRICS.get(metric, (None, None, None, EVENT_DECIMALS.get(metric, 2)))[3]
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
