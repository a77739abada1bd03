#!/usr/bin/env python3
"""Folds `perf script` output into stacks and draws them as a flame graph (SVG).

    perf script -i perf.data | benches/flamegraph.py "title" > out.svg

Each sample's frames, outermost first, become one path; the width of a box is its share of the
samples. Rust symbols are shortened (hash suffixes and generic arguments dropped). Hovering
a box shows its full name, samples and share.
"""
import html, re, sys
from collections import defaultdict

title = sys.argv[1] if len(sys.argv) > 1 else "flame graph"


def impl_type(sym):
    """`<A<T> as Trait>::f` -> `A<T>::f`: the type that implements, not the trait."""
    if not sym.startswith("<"):
        return sym
    depth = 0
    for i, ch in enumerate(sym):
        depth += ch == "<"
        depth -= ch == ">"
        if depth == 0:
            inner, rest = sym[1:i], sym[i + 1:]
            d = 0
            for j, c in enumerate(inner):
                d += c == "<"
                d -= c == ">"
                if d == 0 and inner.startswith(" as ", j):
                    inner = inner[:j]
                    break
            return inner.lstrip("&") + rest
    return sym


def short(sym):
    sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    sym = impl_type(sym)
    out, depth = [], 0          # drop generic arguments, keep the path
    for ch in sym:
        if ch == "<":
            depth += 1
            if depth == 1 and out and out[-1] != ":":
                out.append("<…>")
            continue
        if ch == ">":
            depth = max(0, depth - 1)
            continue
        if depth == 0:
            out.append(ch)
    s = "".join(out).replace("<…>", "") or sym
    return s[:200]


def stacks(lines):
    frames, comm = [], None
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None:
                yield comm, frames
            frames, comm = [], None
            continue
        if not line.startswith((" ", "\t")):
            comm = line.split()[0]
            continue
        parts = line.strip().split(None, 1)
        sym = parts[1] if len(parts) > 1 else parts[0]
        sym = re.sub(r"\s+\(.*\)$", "", sym)
        frames.append(short(sym))
    if comm is not None:
        yield comm, frames


tree = lambda: {"n": 0, "c": defaultdict(tree)}
root = tree()
for comm, frames in stacks(sys.stdin):
    node = root
    node["n"] += 1
    for f in [comm] + frames[::-1]:
        node = node["c"][f]
        node["n"] += 1

W, H, PAD = 1200, 16, 10
total = root["n"] or 1
boxes = []


def walk(node, name, x, depth):
    w = node["n"] / total * (W - 2 * PAD)
    if w < 0.3:
        return
    boxes.append((x, depth, w, name, node["n"]))
    cx = x
    for k, child in sorted(node["c"].items()):
        walk(child, k, cx, depth + 1)
        cx += child["n"] / total * (W - 2 * PAD)


walk(root, "all", PAD, 0)
maxd = max((b[1] for b in boxes), default=0)
height = (maxd + 1) * H + 3 * PAD + 20
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" '
       f'font-family="monospace" font-size="11">',
       f'<rect width="100%" height="100%" fill="#fdfdf6"/>',
       f'<text x="{W / 2}" y="{PAD + 12}" text-anchor="middle" font-size="14">'
       f'{html.escape(title)} ({total} samples)</text>']
for x, d, w, name, n in boxes:
    y = height - PAD - (d + 1) * H
    hsh = sum(map(ord, name)) % 60
    color = f"rgb({200 + hsh % 55},{90 + hsh * 2},{40 + hsh % 30})"
    if name.startswith("gatehouse"):
        color = "rgb(80,160,220)"
    label = html.escape(name)
    tip = f"{label} ({n} samples, {100 * n / total:.2f}%)"
    out.append(f'<g><title>{tip}</title><rect x="{x:.2f}" y="{y}" width="{w:.2f}" '
               f'height="{H - 1}" fill="{color}" rx="2"/>')
    chars = int(w / 6.6)
    if chars >= 3:
        text = name if len(name) <= chars else name[:chars - 1] + "…"
        out.append(f'<text x="{x + 2:.2f}" y="{y + H - 4}">{html.escape(text)}</text>')
    out.append("</g>")
out.append("</svg>")
print("\n".join(out))
