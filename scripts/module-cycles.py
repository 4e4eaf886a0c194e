#!/usr/bin/env python3
"""Fails when a crate's top-level modules import each other in a circle (issue #12).

For every workspace crate (or the crate directories given as arguments) it reads
`src/**/*.rs` outside comments and `#[cfg(test)]` code, takes each
`crate::<module>` reference (also inside `crate::{a, b}` groups, and through
re-exports in `lib.rs`/`main.rs`, so `crate::Type` counts as an edge to the
module that defines it), builds the graph of top-level modules and prints every
strongly connected component larger than one module with the edges that close
it. Text-based by design: no build needed, well under a second.
"""
import os
import re
import sys


def crates():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    manifest = open(os.path.join(root, "Cargo.toml")).read()
    members = re.search(r"members\s*=\s*\[(.*?)\]", manifest, re.S).group(1)
    return [os.path.join(root, m) for m in re.findall(r'"([^"]+)"', members)]


def strip(text):
    text = re.split(r"\n#\[cfg\(test\)\]", text)[0]
    return "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))


def graph(crate):
    src = os.path.join(crate, "src")
    root_file = next(
        (os.path.join(src, f) for f in ("lib.rs", "main.rs") if os.path.exists(os.path.join(src, f))),
        None,
    )
    if root_file is None:
        return {}
    root = strip(open(root_file).read())
    reexports = {}
    for module, body in re.findall(r"pub(?:\(crate\))? use (\w+)::\{?([^;]*?)\}?;", root, re.S):
        for name in re.findall(r"\w+", body):
            reexports[name] = module
    modules = set(re.findall(r"^\s*(?:pub(?:\(crate\))? )?mod (\w+);", root, re.M))
    edges = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            parts = os.path.relpath(path, src)[:-3].split("/")
            me = parts[0]
            if me in ("lib", "main", "bin") or f == "tests.rs" or "tests" in parts[1:]:
                continue
            text = strip(open(path).read())
            names = re.findall(r"crate::(\w+)", text)
            for group in re.findall(r"crate::\{([^}]*)\}", text):
                names += re.findall(r"\b(\w+)\b", group)
            for name in names:
                target = reexports.get(name, name)
                if target in modules and target != me:
                    edges.setdefault(me, {}).setdefault(target, os.path.relpath(path))
    return edges


def cycles(edges):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def main():
    bad = 0
    for crate in sys.argv[1:] or crates():
        edges = graph(crate)
        for comp in cycles(edges):
            bad += 1
            print(f"{os.path.relpath(crate)}: modules import each other in a circle: {' ↔ '.join(comp)}")
            for a in comp:
                for b, path in sorted(edges.get(a, {}).items()):
                    if b in comp:
                        print(f"    {a} -> {b}  ({path})")
    if bad:
        sys.exit(1)
    print("no module import circles")


if __name__ == "__main__":
    main()
