#!/usr/bin/env python3
"""plot-storage -- draw models/REPORT.md's storage table (parent + n tasks: MIME thresholds and
heads vs n fine-tuned copies) as an SVG line chart, the MIME paper's Fig. 1/4 for our tasks.
Reads the markdown table under '### Storage for n tasks'; stdlib only.
Usage: scripts/plot-storage.py [models/REPORT.md] [models/storage.svg]"""
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "models/REPORT.md"
dst = sys.argv[2] if len(sys.argv) > 2 else "models/storage.svg"
text = open(src, encoding="utf-8").read()
section = text.split("### Storage for n tasks", 1)
if len(section) != 2:
    sys.exit(f"plot-storage: {src}: no '### Storage for n tasks' section")
rows = []
for line in section[1].splitlines():
    m = re.match(r"\|\s*(\d+)( \(extrapolated\))?\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|", line)
    if m:
        rows.append((int(m.group(1)), bool(m.group(2)), int(m.group(3)), int(m.group(4))))
    elif rows and not line.startswith("|"):
        break
if not rows:
    sys.exit(f"plot-storage: {src}: the storage table has no rows")

W, H, L, R, T, B = 560, 340, 70, 20, 40, 50
n_max = max(r[0] for r in rows)
y_max = max(max(r[2], r[3]) for r in rows) / 1e6 * 1.1
px = lambda n: L + (n - 1) / max(n_max - 1, 1) * (W - L - R)
py = lambda v: H - B - v / y_max * (H - T - B)
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
       f'font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">DRAM storage, parent + n '
       'tasks (measured n &lt;= 3, then extrapolated)</text>',
       f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>']
step = 1 if y_max < 6 else 2
v = 0
while v <= y_max:
    out.append(f'<text x="{L - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v} MB</text>')
    out.append(f'<line x1="{L}" y1="{py(v):.1f}" x2="{W - R}" y2="{py(v):.1f}" '
               'stroke="#ddd"/>')
    v += step
for n, _, _, _ in rows:
    out.append(f'<text x="{px(n):.1f}" y="{H - B + 18}" text-anchor="middle">{n}</text>')
out.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">n tasks</text>')
for col, color, name in ((2, "#1f77b4", "MIME: parent + thresholds and heads"),
                         (3, "#d62728", "conventional: a fine-tuned copy per task")):
    pts = " ".join(f"{px(r[0]):.1f},{py(r[col] / 1e6):.1f}" for r in rows)
    out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
    for r in rows:
        fill = "white" if r[1] else color
        out.append(f'<circle cx="{px(r[0]):.1f}" cy="{py(r[col] / 1e6):.1f}" r="4" '
                   f'fill="{fill}" stroke="{color}"/>')
    y = T + 10 + (0 if col == 2 else 18)
    out.append(f'<line x1="{L + 15}" y1="{y}" x2="{L + 40}" y2="{y}" stroke="{color}" '
               'stroke-width="2"/>')
    out.append(f'<text x="{L + 46}" y="{y + 4}">{name}</text>')
last = rows[-1]
out.append(f'<text x="{W - R}" y="{T + 10}" text-anchor="end">n = {last[0]}: '
           f'{last[3] / last[2]:.2f}x</text>')
out.append("</svg>")
open(dst, "w", encoding="utf-8").write("\n".join(out) + "\n")
print(f"plot-storage: wrote {dst} ({len(rows)} points)")
