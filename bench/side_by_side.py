"""Summarises a bench/side-by-side run: matches the gateway's rows
(liandong-bench JSON) with NATS JetStream's (liandong-nats-peer JSON) and,
for each match, gives the median of each side over the pairs and the median
and spread (min-max) of the per-pair ratios gateway / NATS.

Usage: side_by_side.py RESULTS_DIR   (reads runs.tsv and the runs' JSON,
writes summary.md and summary.json there). Standard library only.
"""

import csv
import json
import re
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

PEER_SIDES = {
    "nats-always": "NATS JetStream, sync_interval: always",
    "nats-default": "NATS JetStream, default sync interval",
}

# (gateway row pattern, the NATS row it is compared with, metrics, what the
# two rows measure, the pair of names as the summary shows them).
# A metric is (label, how to read it from a row, unit); rate ratios above 1
# mean the gateway does more per second, latency ratios above 1 mean the
# gateway takes longer.
RATE = ("rate", lambda r: r["per_second"], "/s")
P99 = ("p99", lambda r: r["p99_ms"], "ms")
P50 = ("p50", lambda r: r["p50_ms"], "ms")
RULES = [
    (
        re.compile(r"^Publish, (\d+) in flight$"),
        lambda m: f"Publish, {m[1]} in flight",
        [RATE, P99],
        "unary Publish, N calls in flight over 4 connections; NATS: N publishers "
        "over 4 connections, each waiting for its publish ack",
        ("Publish, N in flight", "Publish, N in flight"),
    ),
    (
        re.compile(r"^PublishStream, (\d+) in flight$"),
        lambda m: f"Publish, {m[1]} in flight",
        [RATE, P99],
        "PublishStream on one connection, N requests outstanding; NATS: the same "
        "N-in-flight publish row as above (NATS has no separate pipelined mode here)",
        ("PublishStream, N in flight", "Publish, N in flight"),
    ),
    (
        re.compile(r"^open loop (\d+)/s: publish → receipt$"),
        lambda m: f"open loop {m[1]}/s: publish → ack",
        [P99, P50],
        "open loop, latency from the intended send time to the receipt; NATS: "
        "to the publish ack",
        ("open loop N/s: publish → receipt", "open loop N/s: publish → ack"),
    ),
    (
        re.compile(r"^open loop (\d+)/s: publish → delivered$"),
        lambda m: f"open loop {m[1]}/s: publish → delivered",
        [P99, P50],
        "open loop, latency from the intended send time to delivery (a subscriber "
        "of the recipient agency acking each delivery; NATS: one durable pull "
        "consumer with explicit acks)",
        ("open loop N/s: publish → delivered", "open loop N/s: publish → delivered"),
    ),
    (
        re.compile(r"^Publish → delivered \(RESTRICTED\)$"),
        lambda m: "Publish → delivered (pull consumer, explicit ack)",
        [P99, P50],
        "one notification at a time, publish to delivery",
        (
            "Publish → delivered (RESTRICTED)",
            "Publish → delivered (pull consumer, explicit ack)",
        ),
    ),
]


def gateway_rows(document):
    """The gateway's rows by name, in the NATS row shape."""
    rows = {}
    for r in document["results"]:
        latency = r.get("latency_ms") or {}
        rows[r["test"]] = {
            "per_second": r["per_second"],
            "p50_ms": latency.get("p50"),
            "p99_ms": latency.get("p99"),
            "cpu_us": r.get("gateway_cpu_us_per_message"),
        }
    return rows


def peer_rows(document):
    return {
        p["name"]: {
            "per_second": p["per_second"],
            "p50_ms": p["p50_ms"],
            "p99_ms": p["p99_ms"],
            "cpu_us": p.get("server_cpu_us_per_message"),
        }
        for p in document["phases"]
    }


def conditions(document):
    """Disk probe and load average of one run."""
    probe = document.get("disk_sync_ms")
    if isinstance(probe, dict):
        probe = [probe["p50"], probe["p99"]]
    load = document.get("load_average") or ""
    rows = document.get("results") or document.get("phases") or []
    behind = [r["behind_schedule"] for r in rows if r.get("behind_schedule") is not None]
    return {
        "disk_sync_ms": probe,
        "load_average": load,
        "open_loop_behind_schedule": behind[0] if behind else None,
    }


def spread(values):
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def fmt(value, unit):
    if value is None:
        return "–"
    return f"{value:.0f}" if unit in ("/s", "µs") else f"{value:.2f}"


def main(out):
    with open(out / "runs.tsv", newline="") as f:
        runs = list(csv.DictReader(f, delimiter="\t"))
    documents = {}
    for run in runs:
        documents[(int(run["pair"]), run["side"])] = json.loads(
            (out / run["json"]).read_text()
        )
    pairs = sorted({pair for pair, _ in documents})
    peer_sides = [s for s in PEER_SIDES if any(side == s for _, side in documents)]

    comparisons = []
    for peer_side in peer_sides:
        # Every gateway row name seen, in the order first seen.
        names = []
        for pair in pairs:
            for name in gateway_rows(documents[(pair, "gateway")]):
                if name not in names:
                    names.append(name)
        for name in names:
            for rule, (pattern, partner, metrics, _, _) in enumerate(RULES):
                m = pattern.match(name)
                if not m:
                    continue
                value = m[1] if m.groups() else None
                peer_name = partner(m)
                matched = []
                for pair in pairs:
                    gateway = gateway_rows(documents[(pair, "gateway")]).get(name)
                    peer_document = documents.get((pair, peer_side))
                    peer = peer_document and peer_rows(peer_document).get(peer_name)
                    if gateway and peer:
                        matched.append((pair, gateway, peer))
                if not matched:
                    continue
                def compare(label, unit, g, p):
                    ratios = [a / b for a, b in zip(g, p) if b]
                    comparisons.append(
                        {
                            "peer_mode": peer_side,
                            "gateway_row": name,
                            "peer_row": peer_name,
                            "rule": rule,
                            "n": value,
                            "matched_as": RULES[rule][3],
                            "metric": label,
                            "unit": unit,
                            "pairs": [pair for pair, _, _ in matched],
                            "gateway_values": g,
                            "peer_values": p,
                            "gateway_median": statistics.median(g),
                            "peer_median": statistics.median(p),
                            "ratio": spread(ratios) if ratios else None,
                            "ratios": ratios,
                        }
                    )

                for label, read, unit in metrics:
                    compare(
                        label,
                        unit,
                        [read(gw) for _, gw, _ in matched],
                        [read(pr) for _, _, pr in matched],
                    )
                # Server CPU per message, when both sides measured it.
                g_cpu = [gw["cpu_us"] for _, gw, _ in matched]
                p_cpu = [pr["cpu_us"] for _, _, pr in matched]
                if all(v is not None for v in g_cpu + p_cpu):
                    compare("server CPU per message", "µs", g_cpu, p_cpu)

    run_conditions = [
        {
            "pair": int(run["pair"]),
            "side": run["side"],
            "started": run["started"],
            "ended": run["ended"],
            "json": run["json"],
            **conditions(documents[(int(run["pair"]), run["side"])]),
        }
        for run in runs
    ]
    summary = {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pairs": len(pairs),
        "runs": run_conditions,
        "comparisons": comparisons,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))

    md = [
        f"# Gateway and NATS JetStream side by side, {len(pairs)} interleaved pairs",
        "",
        f"Results in `{out}`. Each pair ran the gateway (liandong-bench, SQLite) "
        "and then NATS JetStream (bench/peer) on the same machine; the medians "
        "are over the pairs, the ratio is gateway / NATS taken within each pair "
        "(median, min–max over the pairs). A rate ratio above 1: the gateway "
        "does more per second; a latency or CPU ratio above 1: the gateway takes "
        "more.",
        "",
    ]
    for peer_side in peer_sides:
        md += [
            f"## Gateway vs {PEER_SIDES[peer_side]}",
            "",
            "| gateway row | NATS row | metric | gateway median | NATS median "
            "| ratio median | ratio min–max | pairs |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for c in comparisons:
            if c["peer_mode"] != peer_side:
                continue
            ratio = c["ratio"]
            unit = c["unit"]
            md.append(
                f"| {c['gateway_row']} | {c['peer_row']} | {c['metric']} ({unit}) "
                f"| {fmt(c['gateway_median'], unit)} | {fmt(c['peer_median'], unit)} "
                + (
                    f"| {ratio['median']:.2f} | {ratio['min']:.2f}–{ratio['max']:.2f} "
                    if ratio
                    else "| – | – "
                )
                + f"| {len(c['pairs'])} |"
            )
        md.append("")
    md += ["## What was matched with what", ""]
    for rule, (_, _, _, meaning, (gateway_name, peer_name)) in enumerate(RULES):
        values = []
        for c in comparisons:
            if c["rule"] == rule and c["n"] not in values:
                values.append(c["n"])
        if not values:
            continue
        which = f" (N = {', '.join(values)})" if values != [None] else ""
        md.append(f"- `{gateway_name}` ↔ `{peer_name}`{which}: {meaning}.")
    md += [
        "",
        "## Runs",
        "",
        "| pair | side | started (UTC) | disk sync p50 / p99 ms | load average "
        "| open loop: sent behind schedule |",
        "|---:|---|---|---|---|---:|",
    ]
    for r in run_conditions:
        probe = r["disk_sync_ms"]
        probe = f"{probe[0]:.2f} / {probe[1]:.2f}" if probe else "–"
        md.append(
            f"| {r['pair']} | {r['side']} | {r['started']} | {probe} | {r['load_average']} "
            f"| {'' if r['open_loop_behind_schedule'] is None else r['open_loop_behind_schedule']} |"
        )
    (out / "summary.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: side_by_side.py RESULTS_DIR")
    main(Path(sys.argv[1]))
