#!/usr/bin/env python3
"""Summary of run.sh's results: medians over rounds, each ratio taken
against the bare server's run in the same round at the same connections.
Usage: summary.py RESULTS_TSV READY_TXT"""
import collections
import statistics
import sys

results, ready = sys.argv[1], sys.argv[2]
runs = collections.defaultdict(dict)  # (name, conns) -> round -> (rps, p50, p99, bad)
rss = collections.defaultdict(list)
for line in open(results):
    f = line.rstrip("\n").split("\t")
    if f[1] == "rss":
        rss[f[2]].append(int(f[3]) / 1024)
        continue
    rnd, name, conns, rps, p50, p99, non2xx, errors = f
    runs[(name, int(conns))][rnd] = (float(rps), float(p50), float(p99), int(non2xx) + int(errors))


def med(xs):
    return statistics.median(xs) if xs else float("nan")


print("| run | conns | req/s (median) | ratio to bare (median of per-round ratios) | p50 ms | p99 ms | non-2xx + socket errors |")
print("|---|---|---|---|---|---|---|")
for (name, conns), by_round in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0] != "bare", kv[0][0])):
    bare = runs.get(("bare", conns), {})
    ratios = [v[0] / bare[r][0] for r, v in by_round.items() if r in bare and bare[r][0] > 0]
    ratio = "—" if name == "bare" else f"{100 * med(ratios):.0f} % ({', '.join(f'{100 * x:.0f}' for x in ratios)})"
    print(
        f"| {name} | {conns} | {med([v[0] for v in by_round.values()]):,.0f} | {ratio} | "
        f"{med([v[1] for v in by_round.values()]):.2f} | {med([v[2] for v in by_round.values()]):.2f} | "
        f"{sum(v[3] for v in by_round.values())} |"
    )
for name, xs in sorted(rss.items()):
    print(f"peak RSS {name}: median {med(xs):.1f} MiB, max {max(xs):.1f} MiB over {len(xs)} rounds")
print(open(ready).read().strip())
