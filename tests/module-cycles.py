#!/usr/bin/env python3
"""Import cycles between the engine's modules: none are allowed.

Reads every file under a crate's `src/` (test modules and comments left out), takes the
`crate::a::b` and `super::b` paths it names, and builds the graph between modules cut at
DEPTH levels (1: `shard`, `config`; 2: `shard::core`, `control::token`). Prints each cycle
with the edges in it and exits 1 when there is one.

Usage: tests/module-cycles.py [SRC_DIR] [DEPTH]   (defaults: engine/src, 2)
"""

import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "engine/src"
depth = int(sys.argv[2]) if len(sys.argv) > 2 else 2


def module_path(path):
    parts = os.path.relpath(path, root)[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def cut(parts):
    return "::".join(parts[:depth]) or "crate"


edges = {}
for directory, _, files in os.walk(root):
    for name in files:
        if not name.endswith(".rs") or name == "tests.rs":
            continue
        path = os.path.join(directory, name)
        text = open(path, encoding="utf-8").read()
        at = text.find("#[cfg(test)]\nmod tests")
        if at >= 0:
            text = text[:at]
        text = re.sub(r"//[^\n]*", "", text)
        here = module_path(path)
        source = cut(here)
        named = re.findall(r"(?<![a-z_:])crate::((?:[a-z_0-9]+::)*[a-z_0-9]+)", text)
        named += [
            "::".join(here[:-1] + [p])
            for p in re.findall(r"(?<![a-z_:])super::((?:[a-z_0-9]+::)*[a-z_0-9]+)", text)
        ]
        for target_path in named:
            target = cut(target_path.split("::"))
            # A module and what it contains are one node, whichever side names the other.
            if target == source or source.startswith(target + "::") or target.startswith(source + "::"):
                continue
            edges.setdefault(source, set()).add(target)

# Strongly connected components (Tarjan).
index, low, stack, on_stack, cycles = {}, {}, [], set(), []
counter = [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            component.append(w)
            if w == v:
                break
        if len(component) > 1:
            cycles.append(sorted(component))


for v in sorted(edges):
    if v not in index:
        visit(v)
for component in cycles:
    print("import cycle between: " + ", ".join(component))
    for a in component:
        for b in sorted(edges.get(a, ())):
            if b in component:
                print(f"  {a} -> {b}")
modules = len(set(edges) | {t for ts in edges.values() for t in ts})
print(f"{root}: {modules} modules at depth {depth}, {len(cycles)} import cycles")
sys.exit(1 if cycles else 0)
