"""Reads run.sh's raw results (one line per proxy and repetition) and prints
the medians table with ratios to nginx."""
import statistics, sys
from collections import defaultdict

rows = defaultdict(lambda: defaultdict(list))
noisy = defaultdict(int)
order = []
for line in open(sys.argv[1]):
    fields = line.split()
    if not fields:
        continue
    proxy, metric, value = fields[0], fields[1], fields[2]
    if proxy not in order:
        order.append(proxy)
    if metric == "noise":
        noisy[proxy] += int(value)
        continue
    rows[proxy][metric].append(float(value))

metrics = [
    ("handshakes_per_s", "handshakes/s", "{:.0f}"),
    ("handshake_cpu_us", "CPU us/hshake", "{:.1f}"),
    ("rps", "req/s", "{:.0f}"),
    ("p50_us", "p50 us", "{:.0f}"),
    ("p99_us", "p99 us", "{:.0f}"),
    ("cpu_us", "CPU us/req", "{:.2f}"),
    ("user_us", "of it user", "{:.2f}"),
    ("rss_kib", "peak RSS KiB", "{:.0f}"),
    ("idle_kib", "KiB/idle conn", "{:.2f}"),
    ("fixed_p99_us", "p99 us @fixed", "{:.0f}"),
    ("h2_rps", "h2 req/s", "{:.0f}"),
    ("h2_cpu_us", "h2 CPU us/req", "{:.2f}"),
    ("big_mbs", "1MiB MB/s", "{:.0f}"),
]
present = [m for m in metrics if any(rows[p][m[0]] for p in order)]
header = f"{'proxy':<8}" + "".join(f"{title:>15}" for _, title, _ in present) + f"{'noisy reps':>12}"
print(header)
for proxy in order:
    cells = []
    for key, _, fmt in present:
        values = rows[proxy][key]
        cells.append(fmt.format(statistics.median(values)) if values else "-")
    reps = max(len(values) for values in rows[proxy].values())
    print(f"{proxy:<8}" + "".join(f"{c:>15}" for c in cells) + f"{str(noisy[proxy]) + '/' + str(reps):>12}")
if "nginx" in order:
    print()
    print("ratio to nginx (medians; below 1.0 is better for all but req/s, handshakes/s and MB/s)")
    for proxy in order:
        cells = []
        for key, _, _ in present:
            mine, base = rows[proxy][key], rows["nginx"][key]
            if mine and base and statistics.median(base):
                cells.append(f"{statistics.median(mine) / statistics.median(base):.2f}x")
            else:
                cells.append("-")
        print(f"{proxy:<8}" + "".join(f"{c:>15}" for c in cells))
