"""Prints the attack probe's results (JSON lines from attack.py, with
`proxy`) as a Markdown table: one row per attack, one column per proxy."""
import json
import sys

PROXIES = [("usherd", "usherd"), ("nginx", "nginx"), ("haproxy", "HAProxy")]
ORDER = ["slowloris", "slow_body_under", "slow_body_over", "no_read", "rapid_reset", "stream_flood",
         "window_stall", "continuation_flood", "rapid_reset_tls", "stream_flood_tls", "window_stall_tls",
         "continuation_flood_tls", "max_connections", "backend_dies", "backend_stalls"]


def probe(r):
    if "probe_total" not in r:
        return ""
    errors = ", ".join(f"{n} {e}" for e, n in sorted(r["probe_errors"].items()))
    text = f"probe {r['probe_ok']}/{r['probe_total']} ok"
    if errors:
        text += f" ({errors})"
    if r.get("probe_p50_ms") is not None:
        text += f", p50 {r['probe_p50_ms']:g} ms, max {r['probe_max_ms']:g} ms"
    return text


def conns(r):
    if "client_conns_peak" not in r:
        return ""
    text = f"client conns peak {r['client_conns_peak']}, end {r['client_conns_end']}"
    if r.get("accept_queue_peak"):
        text += f" (accept queue peak {r['accept_queue_peak']})"
    text += f"; backend requests held peak {r['backend_busy_peak']}, end {r['backend_busy_end']}"
    return text


def cell(r):
    if r is None:
        return "-"
    parts = [r.get("summary", "")] + [p for p in (probe(r), conns(r)) if p]
    return "<br>".join(parts).replace("|", "/")


def main():
    results = {}
    for line in open(sys.argv[1]):
        line = line.strip()
        if line:
            r = json.loads(line)
            results[(r["attack"], r["proxy"])] = r
    attacks = [a for a in ORDER if any((a, p) == key for key in results for p, _ in PROXIES)]
    print("| attack | " + " | ".join(name for _, name in PROXIES) + " |")
    print("|---" * (len(PROXIES) + 1) + "|")
    for attack in attacks:
        print(f"| {attack} | " + " | ".join(cell(results.get((attack, p))) for p, _ in PROXIES) + " |")


if __name__ == "__main__":
    main()
