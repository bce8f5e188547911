"""The CPU of the cluster's daemons, per program, over a window: read from /proc on this host
(a container's processes are the host's), counting only processes in docker's cgroups.
Prints "yggdrasil 15.5 consul 12.9 raptiformica 4.0 all 32.5" (% of one core), then, with
--servers, the three busiest containers (the consul servers, the overlay's hubs) apart.
Usage: python3 bench/daemon_cpu.py [SECONDS] [--servers]"""
import collections
import os
import re
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")


def sample():
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cgroup = open(f"/proc/{pid}/cgroup").read()
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        container = re.search(r"docker[-/]([0-9a-f]{12})", cgroup)
        if not container:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[pid] = (container.group(1), name, int(fields[11]) + int(fields[12]))
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    secs = float(args[0]) if args else 30.0
    before = sample()
    time.sleep(secs)
    after = sample()
    per_name = collections.Counter()
    per_container = collections.Counter()
    for pid, (container, name, ticks) in after.items():
        if pid in before:
            used = ticks - before[pid][2]
            per_name[name] += used
            per_container[container] += used
    pct = lambda ticks: 100.0 * ticks / HZ / secs
    names = ["yggdrasil", "consul", "raptiformica"]
    print(" ".join(f"{n} {pct(per_name[n]):.1f}" for n in names), f"all {pct(sum(per_name.values())):.1f}")
    if "--servers" in sys.argv:
        ordered = [t for _, t in per_container.most_common()]
        busiest, rest = ordered[:3], ordered[3:]
        print(
            "busiest 3 (the servers):",
            " ".join(f"{pct(t):.1f}" for t in busiest),
            f"| the others: {pct(sum(rest)) / max(1, len(rest)):.2f} each",
        )


main()
