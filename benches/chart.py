#!/usr/bin/env python3
"""A chart (SVG) of the rows of a benches/compare.sh run: requests/s and CPU µs per request.

    benches/compare.sh | tee /tmp/compare.txt
    benches/chart.py "title" < /tmp/compare.txt > docs/compare.svg

Reads the request rows (target, requests/s, p50, p99, CPU µs/request) and the handshake rows
(target, handshakes/s, CPU µs/handshake); each becomes a bar in its panel, gatehouse's bars
blue, the others grey.
"""
import html, math, sys

title = sys.argv[1] if len(sys.argv) > 1 else "benches/compare.sh"
req, hs, section = [], [], "req"
for line in sys.stdin:
    f = line.split()
    if not f:
        continue
    if f[0] == "handshakes":
        section = "hs"
        continue
    try:
        if "2xx" in line:       # a request row: target rps p50 p99 cpu (ok/total 2xx)
            rps, _, _, cpu = (float(x) for x in f[1:5])
            if f[0].endswith("@half"):
                continue
            (hs if section == "hs" else req).append((f[0], rps, cpu))
        elif section == "hs":   # a handshake row: target hs/s cpu resumed (n connections)
            hs.append((f[0], float(f[1]), float(f[2])))
    except (ValueError, IndexError):
        continue

panels = [("requests/s", [(n, a) for n, a, _ in req]),
          ("CPU µs per request", [(n, c) for n, _, c in req if not math.isnan(c)]),
          ("handshakes/s", [(n, a) for n, a, _ in hs]),
          ("CPU µs per handshake", [(n, c) for n, _, c in hs])]
panels = [p for p in panels if p[1]]
BAR, GAP, LEFT, WIDTH = 16, 4, 190, 420
y = 40
out = []
for name, rows in panels:
    out.append(f'<text x="10" y="{y}" font-size="13" font-weight="bold">{html.escape(name)}</text>')
    y += 8
    top = max(v for _, v in rows) or 1
    for label, v in rows:
        w = v / top * WIDTH
        color = "#3c8dcb" if label.startswith("gatehouse") else "#9a9a9a"
        out.append(f'<text x="{LEFT - 6}" y="{y + BAR - 4}" text-anchor="end">{html.escape(label)}</text>')
        out.append(f'<rect x="{LEFT}" y="{y}" width="{w:.1f}" height="{BAR}" fill="{color}"/>')
        out.append(f'<text x="{LEFT + w + 4:.1f}" y="{y + BAR - 4}">{v:,.1f}</text>')
        y += BAR + GAP
    y += 24
W = LEFT + WIDTH + 90
print(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y}" font-family="sans-serif" font-size="11">')
print(f'<rect width="100%" height="100%" fill="white"/>')
print(f'<text x="10" y="20" font-size="14">{html.escape(title)}</text>')
print("\n".join(out))
print("</svg>")
