#!/usr/bin/env python3
"""The import graph among usherd's top-level modules (src/*.rs, src/*/),
from `crate::NAME` paths outside comments. Fails when the graph has a cycle,
or when a data-plane module imports a control-side one (docs/architecture.md).
`--print` prints the graph as docs/architecture.md shows it."""

import re
import sys
from pathlib import Path

# What serves requests, bottom to top; it reads the published snapshot and
# names nothing of the control side.
DATA_PLANE = {
    "http1", "tls", "stats", "log_limit", "error", "secret", "config",
    "balance", "routing", "downstream", "body", "upstream", "snapshot",
    "proxy", "server",
}
# What changes the snapshot, or serves and starts everything.
CONTROL_SIDE = {
    "control", "discovery", "registry", "etcd", "reload", "fleet", "admin",
    "app",
}

src = Path(__file__).resolve().parent.parent / "src"
modules = sorted(
    p.stem if p.is_file() else p.name
    for p in src.iterdir()
    if (p.is_file() and p.suffix == ".rs" and p.stem not in ("main", "lib"))
    or p.is_dir()
)
graph = {}
for module in modules:
    path = src / module
    files = sorted(path.rglob("*.rs")) if path.is_dir() else [src / f"{module}.rs"]
    deps = set()
    for file in files:
        for line in file.read_text().splitlines():
            if line.lstrip().startswith("//"):
                continue
            for name in re.findall(r"crate::([A-Za-z_0-9]+)", line):
                deps.add("(root)" if name[0].isupper() else name)
    deps.discard(module)
    graph[module] = sorted(deps)

if "--print" in sys.argv:
    width = max(len(m) for m in modules)
    for module in modules:
        print(f"{module:<{width}} -> {' '.join(graph[module]) or '(none)'}")
    sys.exit(0)

failures = []
# Beside both: the tools and a leaf that names this machine.
BESIDE = {"bench", "demo", "demo_registration", "host", "probe"}
unknown = set(modules) - DATA_PLANE - CONTROL_SIDE - BESIDE
if unknown:
    failures.append(f"not sorted into a side in .ci/imports.py: {', '.join(sorted(unknown))}")
for module in sorted(DATA_PLANE & set(modules)):
    above = sorted(set(graph[module]) & CONTROL_SIDE)
    if above:
        failures.append(f"data-plane module {module} imports the control side: {', '.join(above)}")

# Depth-first search for a cycle, reported as its path.
state = {}
def visit(module, path):
    state[module] = "open"
    for dep in graph.get(module, []):
        if dep not in graph:
            continue
        if state.get(dep) == "open":
            cycle = path[path.index(dep):] + [dep]
            failures.append("import cycle: " + " -> ".join(cycle))
        elif dep not in state:
            visit(dep, path + [dep])
    state[module] = "done"
for module in modules:
    if module not in state:
        visit(module, [module])

for failure in failures:
    print(f".ci/imports.py: {failure}", file=sys.stderr)
sys.exit(1 if failures else 0)
