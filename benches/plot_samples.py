#!/usr/bin/env python3
"""Plot the latency distributions a bench binary recorded with BENCH_SAMPLES.

    BENCH_SAMPLES=target/cold-start.jsonl cargo bench -p wasm-sandbox-benches --bench cold_start
    python3 benches/plot_samples.py target/cold-start.jsonl docs/img/cold-start.svg --title "..."

Each input line is {"name": str, "us": [float, ...]} (benches/src/lib.rs). The output is one
SVG with an empirical CDF per measurement (x: log scale, time), the median and p99 marked.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

W, PANEL_H, PAD_L, PAD_R, PAD_T = 760, 150, 70, 30, 46


def esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fmt_us(us: float) -> str:
    if us >= 1000:
        ms = us / 1000
        return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.3g} ms"
    return f"{us:.3g} µs"


def pct(xs: list[float], q: float) -> float:
    i = max(0, min(len(xs) - 1, math.ceil(len(xs) * q) - 1))
    return xs[i]


def panel(y0: int, name: str, xs: list[float]) -> list[str]:
    xs = sorted(x for x in xs if x > 0)
    out = [f'<text x="{PAD_L}" y="{y0 + 14}" font-size="13" font-weight="bold">{esc(name)}</text>']
    if not xs:
        return out
    lo = 10 ** math.floor(math.log10(xs[0]))
    hi = 10 ** math.ceil(math.log10(xs[-1]) + 1e-9)
    if hi <= lo:
        hi = lo * 10
    top, bottom = y0 + 24, y0 + PANEL_H - 26
    left, right = PAD_L, W - PAD_R

    def px(v: float) -> float:
        return left + (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (right - left)

    def py(p: float) -> float:
        return bottom - p * (bottom - top)

    out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#999"/>')
    decade = lo
    while decade <= hi * 1.0001:
        x = px(decade)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle">{fmt_us(decade)}</text>')
        decade *= 10
    for p in (0.0, 0.5, 1.0):
        out.append(f'<text x="{left - 6}" y="{py(p) + 3:.1f}" font-size="10" text-anchor="end">{p:g}</text>')
    n = len(xs)
    pts = " ".join(f"{px(x):.1f},{py((i + 1) / n):.1f}" for i, x in enumerate(xs))
    out.append(f'<polyline points="{pts}" fill="none" stroke="#1f6feb" stroke-width="1.6"/>')
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        v = pct(xs, q)
        x = px(v)
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" stroke="#d1242f" stroke-dasharray="3,3"/>')
        out.append(f'<text x="{x + 3:.1f}" y="{top + (12 if q == 0.5 else 24)}" font-size="10" fill="#d1242f">{label} {fmt_us(v)}</text>')
    out.append(f'<text x="{right}" y="{y0 + 14}" font-size="11" text-anchor="end">n = {n}</text>')
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples", type=Path)
    ap.add_argument("svg", type=Path)
    ap.add_argument("--title", default="latency distributions")
    args = ap.parse_args()
    series = [json.loads(line) for line in args.samples.read_text().splitlines() if line.strip()]
    h = PAD_T + PANEL_H * len(series) + 10
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif">',
        f'<rect width="{W}" height="{h}" fill="white"/>',
        f'<text x="{W / 2}" y="20" font-size="15" text-anchor="middle" font-weight="bold">{esc(args.title)}</text>',
        f'<text x="{W / 2}" y="36" font-size="11" text-anchor="middle">empirical CDF, x = time (log scale); dashed = p50 and p99</text>',
    ]
    for i, s in enumerate(series):
        body += panel(PAD_T + i * PANEL_H, s["name"], [float(x) for x in s["us"]])
    body.append("</svg>")
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    args.svg.write_text("\n".join(body) + "\n")
    print(f"wrote {args.svg} ({len(series)} distributions)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
