#!/usr/bin/env python3
"""Draws the panels of a Grafana dashboard JSON into one self-contained HTML page, with the data
of a real Prometheus: what scripts/dashboard-png.sh screenshots into docs/images/dashboard.png.

Not Grafana (which this machine cannot install): a small stand-in that reads the dashboard's own
panels (`panels`, including the panels nested in rows), their `gridPos` on the 24-column grid,
`title`, `type` (row, stat, timeseries), `targets[].expr` and `legendFormat`,
`fieldConfig.defaults.unit`/`min`/`thresholds`, the stat `colorMode`, and the timeseries
`fillOpacity`. Template variables are substituted (`--var name=value`, `$__rate_interval`,
`$__interval`, `$__range`; `${datasource}` is this Prometheus). Time series come from
/api/v1/query_range over [--start, --end]; stat panels from /api/v1/query at --end. Standard
library only.

Writes the page to --out and prints its height in pixels (for chromium's --window-size); a
line per panel on stderr says how many series it drew.
"""

import argparse
import datetime
import html
import json
import math
import re
import sys
import urllib.parse
import urllib.request

# Grafana's dark theme and its classic palette.
BG = "#111217"
PANEL_BG = "#181b1f"
BORDER = "#2c3235"
TEXT = "#ccccdc"
TEXT_WEAK = "#8e8e9e"
GRID = "#2a2d33"
PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9",
           "#705DA0", "#37872D", "#FADE2A", "#447EBC", "#C15C17", "#890F02", "#0A437C"]
NAMED = {"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A",
         "blue": "#5794F2", "purple": "#B877D9", "text": TEXT, "transparent": "transparent"}

# Grafana's grid: 24 columns, rows of 30 px, 8 px between panels.
CELL_H = 30
MARGIN = 8
HEADER_H = 96
FONT = "Inter, Roboto, 'Helvetica Neue', Arial, sans-serif"


def esc(s):
    return html.escape(str(s), quote=True)


# --- Prometheus --------------------------------------------------------------------------------

def prom(base, path, params):
    url = base.rstrip("/") + path + "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def parse_value(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def legend(fmt, metric, expr):
    if fmt:
        return re.sub(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}",
                      lambda m: metric.get(m.group(1), ""), fmt).strip() or fmt
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()))
    return "{" + labels + "}" if labels else expr


# --- units ------------------------------------------------------------------------------------

def _num(v, decimals=None):
    if decimals is None:
        a = abs(v)
        decimals = 0 if a >= 100 or v == int(v) else 1 if a >= 10 else 2 if a >= 1 else 3
    s = f"{v:.{decimals}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _scaled(v, steps, base, suffix=""):
    """`steps`: suffixes for base^0, base^1, ..."""
    i = 0
    while abs(v) >= base and i < len(steps) - 1:
        v /= base
        i += 1
    return f"{_num(v)}{steps[i]}{suffix}"


def fmt_duration(seconds, max_parts=2):
    s = abs(seconds)
    parts = []
    for name, size in (("year", 31536000), ("day", 86400), ("hour", 3600), ("minute", 60),
                       ("second", 1)):
        if s >= size or (name == "second" and not parts):
            n = int(s // size)
            s -= n * size
            parts.append(f"{n} {name}{'' if n == 1 else 's'}")
        if len(parts) == max_parts:
            break
    return ("-" if seconds < 0 else "") + ", ".join(parts)


def fmt_unit(v, unit):
    if v is None:
        return "-"
    if unit in ("s", "seconds"):
        a = abs(v)
        if a == 0:
            return "0 s"
        if a < 1e-6:
            return f"{_num(v * 1e9)} ns"
        if a < 1e-3:
            return f"{_num(v * 1e6)} µs"
        if a < 1:
            return f"{_num(v * 1e3)} ms"
        if a < 60:
            return f"{_num(v)} s"
        return fmt_duration(v)
    if unit == "dtdurations":
        return fmt_duration(v)
    if unit == "bytes":
        return _scaled(v, [" B", " KiB", " MiB", " GiB", " TiB"], 1024)
    if unit == "reqps":
        return _scaled(v, ["", "K", "M"], 1000, " req/s")
    if unit == "cps":
        return _scaled(v, ["", "K", "M"], 1000, " c/s")
    if unit == "percentunit":
        return f"{_num(v * 100)}%"
    return _scaled(v, ["", " K", " Mil", " Bil"], 1000)


DURATION_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
                  43200, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400, 91 * 86400,
                  182 * 86400, 365 * 86400]


def is_duration(unit, hi):
    return unit == "dtdurations" or (unit in ("s", "seconds") and hi >= 60)


def nice_ticks(lo, hi, count=4, durations=False):
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1)
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    if durations and raw >= 1:
        step = next((d for d in DURATION_STEPS if d >= raw), step)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t < hi + step * 0.999:
        ticks.append(round(t, 12))
        t += step
    return ticks


def time_ticks(start, end, width_px):
    span = end - start
    for step in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if span / step <= max(2, width_px // 90):
            break
    first = math.ceil(start / step) * step
    return list(range(int(first), int(end) + 1, step))


def threshold_color(thresholds, v):
    color = NAMED["green"]
    for st in (thresholds or {}).get("steps", []):
        if st.get("value") is None or (v is not None and v >= st["value"]):
            c = st.get("color", "green")
            color = NAMED.get(c, c)
    return color


# --- drawing ---------------------------------------------------------------------------------

def text_width(s, px=12):
    return len(s) * px * 0.56


def draw_timeseries(panel, series, w, h, start, end):
    """SVG of the plot and an HTML legend, inside a panel body of w x h pixels."""
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    unit = defaults.get("unit", "short")
    fill = ((defaults.get("custom") or {}).get("fillOpacity", 0) or 0) / 100
    line_w = (defaults.get("custom") or {}).get("lineWidth", 1) or 1
    # Legend rows: the items wrap like Grafana's list legend.
    rows, x = 1, 0
    for s in series:
        iw = text_width(s["name"]) + 34
        if x and x + iw > w - 8:
            rows += 1
            x = 0
        x += iw
    rows = min(rows, 4)
    legend_h = rows * 18 + 6
    plot_h = h - legend_h
    values = [v for s in series for _, v in s["points"] if v is not None]
    lo, hi = min(values), max(values)
    if defaults.get("min") is not None:
        lo = min(lo, defaults["min"])
    if defaults.get("max") is not None:
        hi = max(hi, defaults["max"])
    if lo >= 0:
        lo = 0
    if hi == lo:
        hi = lo + (abs(hi) if hi else 1)
    durations = is_duration(unit, hi)
    ticks = nice_ticks(lo, hi, durations=durations)
    lo, hi = ticks[0], ticks[-1]
    if durations:
        labels = [fmt_duration(t, 1) if t else "0" for t in ticks]
    else:
        labels = [fmt_unit(t, unit) for t in ticks]
    left = max(text_width(lab, 11) for lab in labels) + 10
    right, top, bottom = 10, 6, 20
    pw, ph = w - left - right, plot_h - top - bottom

    def px(t):
        return left + (t - start) / (end - start) * pw

    def py(v):
        return top + (1 - (v - lo) / (hi - lo)) * ph

    out = [f'<svg width="{w}" height="{plot_h}" xmlns="http://www.w3.org/2000/svg" '
           f'font-family="{FONT}" font-size="11">']
    for t, lab in zip(ticks, labels):
        y = py(t)
        out.append(f'<line x1="{left:.1f}" x2="{left + pw:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                   f'stroke="{GRID}" stroke-width="1"/>')
        out.append(f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end" '
                   f'fill="{TEXT_WEAK}">{esc(lab)}</text>')
    for t in time_ticks(start, end, pw):
        x = px(t)
        if x < left + 24 or x > left + pw - 24:
            continue  # a label there would run into the axis or off the panel
        label = datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%H:%M:%S")
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph:.1f}" '
                   f'stroke="{GRID}" stroke-width="1"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 15:.1f}" text-anchor="middle" '
                   f'fill="{TEXT_WEAK}">{label}</text>')
    base = py(max(lo, min(0, hi)))
    for s in series:
        # Split at gaps (NaN, missing samples).
        segments, cur, prev_t = [], [], None
        for t, v in s["points"]:
            if v is None or (prev_t is not None and t - prev_t > s["step"] * 1.5):
                if cur:
                    segments.append(cur)
                cur = []
            if v is not None:
                cur.append((px(t), py(v)))
            prev_t = t if v is not None else None
        if cur:
            segments.append(cur)
        for seg in segments:
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)
            if fill > 0 and len(seg) > 1:
                poly = f"{seg[0][0]:.1f},{base:.1f} {pts} {seg[-1][0]:.1f},{base:.1f}"
                out.append(f'<polygon points="{poly}" fill="{s["color"]}" '
                           f'fill-opacity="{fill}" stroke="none"/>')
            if len(seg) == 1:
                x, y = seg[0]
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{s["color"]}"/>')
            else:
                out.append(f'<polyline points="{pts}" fill="none" stroke="{s["color"]}" '
                           f'stroke-width="{line_w}" stroke-linejoin="round"/>')
    out.append("</svg>")
    items = "".join(
        f'<span class="li"><i style="background:{s["color"]}"></i>{esc(s["name"])}</span>'
        for s in series)
    out.append(f'<div class="legend" style="max-height:{legend_h}px">{items}</div>')
    return "".join(out)


def draw_stat(panel, values, w, h):
    defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
    unit = defaults.get("unit", "short")
    mode = (panel.get("options") or {}).get("colorMode", "value")
    cells = []
    n = max(1, len(values))
    size = max(18, min(int(h * 0.55), int(w / n / 6.5)))
    for name, v in values:
        color = threshold_color(defaults.get("thresholds"), v)
        text = fmt_unit(v, unit)
        fs = min(size, int((w / n - 16) / max(1, len(text)) * 1.7))
        style = f"color:{'#fff' if mode == 'background' else color};font-size:{fs}px"
        name_html = f'<div class="sname">{esc(name)}</div>' if n > 1 else ""
        cells.append((color, f'<div class="scell">{name_html}<div class="sval" '
                             f'style="{style}">{esc(text)}</div></div>'))
    return cells


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", required=True, help="Grafana dashboard JSON")
    ap.add_argument("--start", type=float, required=True, help="Unix seconds")
    ap.add_argument("--end", type=float, required=True, help="Unix seconds")
    ap.add_argument("--step", type=float, help="query_range step (default: about 300 points)")
    ap.add_argument("--rate-interval", default="30s", help="what $__rate_interval becomes")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                    help="a template variable's value (repeatable)")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--out", required=True, help="the HTML page")
    a = ap.parse_args()

    with open(a.dashboard, encoding="utf-8") as f:
        dash = json.load(f)
    start, end = a.start, a.end
    step = a.step or max(1.0, round((end - start) / 300))
    variables = dict(v.split("=", 1) for v in a.var)
    variables.update({"__rate_interval": a.rate_interval, "__interval": f"{int(step)}s",
                      "__range": f"{int(end - start)}s", "datasource": "prometheus"})

    def subst(expr):
        def repl(m):
            name = m.group(1) or m.group(2) or m.group(3)
            return variables.get(name, m.group(0))
        return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|\[\[([A-Za-z_][A-Za-z0-9_]*)\]\]"
                      r"|\$([A-Za-z_][A-Za-z0-9_]*)", repl, expr)

    panels = []
    for p in dash.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []))  # a collapsed row's panels
    col_w = (a.width - 2 * MARGIN - 23 * MARGIN) / 24
    body = []
    bottom = 0
    for p in panels:
        g = p.get("gridPos") or {}
        x = MARGIN + g.get("x", 0) * (col_w + MARGIN)
        y = HEADER_H + g.get("y", 0) * (CELL_H + MARGIN)
        w = g.get("w", 12) * col_w + (g.get("w", 12) - 1) * MARGIN
        h = g.get("h", 8) * CELL_H + (g.get("h", 8) - 1) * MARGIN
        bottom = max(bottom, y + h)
        pos = f"left:{x:.0f}px;top:{y:.0f}px;width:{w:.0f}px;height:{h:.0f}px"
        title = p.get("title", "")
        ptype = p.get("type")
        if ptype == "row":
            body.append(f'<div class="row" style="{pos}">&#9662; {esc(title)}</div>')
            continue
        bw, bh = w - 16, h - 32 - 8
        if ptype == "stat":
            values = []
            for t in p.get("targets", []):
                expr = subst(t.get("expr", ""))
                for r in prom(a.prometheus, "/api/v1/query", {"query": expr, "time": end})["result"]:
                    val = r["value"] if "value" in r else None
                    values.append((legend(t.get("legendFormat"), r.get("metric", {}), expr),
                                   parse_value(val[1]) if val else None))
            print(f"dashboard_render: {title!r}: stat, {len(values)} value(s) "
                  f"{[fmt_unit(v, ((p.get('fieldConfig') or {}).get('defaults') or {}).get('unit', 'short')) for _, v in values]}",
                  file=sys.stderr)
            if not values:
                body.append(f'<div class="panel" style="{pos}"><div class="title">{esc(title)}</div>'
                            f'<div class="nodata">No data</div></div>')
                continue
            cells = draw_stat(p, values, bw, bh)
            bg = cells[0][0] if (p.get("options") or {}).get("colorMode") == "background" else PANEL_BG
            body.append(f'<div class="panel stat" style="{pos};background:{bg}">'
                        f'<div class="title">{esc(title)}</div><div class="sbody">'
                        + "".join(c for _, c in cells) + "</div></div>")
            continue
        series = []
        for t in p.get("targets", []):
            expr = subst(t.get("expr", ""))
            data = prom(a.prometheus, "/api/v1/query_range",
                        {"query": expr, "start": start, "end": end, "step": step})
            found = []
            for r in data["result"]:
                pts = [(float(ts), parse_value(v)) for ts, v in r.get("values", [])]
                if any(v is not None for _, v in pts):
                    found.append({"name": legend(t.get("legendFormat"), r.get("metric", {}), expr),
                                  "points": pts, "step": step})
            series.extend(sorted(found, key=lambda s: s["name"]))
        for i, s in enumerate(series):  # each panel starts the palette anew, as Grafana does
            s["color"] = PALETTE[i % len(PALETTE)]
        print(f"dashboard_render: {title!r}: {ptype}, {len(series)} series "
              f"{[s['name'] for s in series]}", file=sys.stderr)
        inner = (draw_timeseries(p, series, bw, bh, start, end) if series
                 else '<div class="nodata">No data</div>')
        body.append(f'<div class="panel" style="{pos}"><div class="title">{esc(title)}</div>'
                    f'<div class="pbody">{inner}</div></div>')

    def ts(t):
        return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    shown = {k: v for k, v in variables.items() if not k.startswith("__") and k != "datasource"}
    var_labels = {v.get("name"): v.get("label") or v.get("name")
                  for v in (dash.get("templating") or {}).get("list", [])}
    var_html = "".join(f'<span class="var"><b>{esc(var_labels.get(k, k))}</b>{esc(v)}</span>'
                       for k, v in shown.items())
    height = int(bottom + MARGIN + 26)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{esc(dash.get('title', 'dashboard'))}</title>
<style>
html,body{{margin:0;background:{BG};color:{TEXT};font-family:{FONT};font-size:12px}}
body{{position:relative;width:{a.width}px;height:{height}px;overflow:hidden}}
.head{{position:absolute;left:{MARGIN}px;right:{MARGIN}px;top:8px;height:{HEADER_H - 16}px}}
.head h1{{font-size:20px;font-weight:500;margin:4px 0 10px 0}}
.head .range{{position:absolute;right:0;top:6px;color:{TEXT};font-size:13px;
  border:1px solid {BORDER};border-radius:2px;padding:5px 10px;background:{PANEL_BG}}}
.var{{display:inline-block;margin-right:10px;border:1px solid {BORDER};border-radius:2px;
  background:{PANEL_BG}}}
.var b{{font-weight:500;display:inline-block;padding:5px 8px;background:#22252b;color:#6e9fff}}
.var{{padding-right:10px}} .var b{{margin-right:8px}}
.row{{position:absolute;font-size:15px;font-weight:500;line-height:{CELL_H}px;color:{TEXT}}}
.panel{{position:absolute;box-sizing:border-box;background:{PANEL_BG};border:1px solid {BORDER};
  border-radius:2px;overflow:hidden}}
.title{{height:32px;line-height:32px;padding:0 8px;font-size:14px;font-weight:500;
  white-space:nowrap;overflow:hidden;text-overflow:ellipsis}}
.pbody{{position:absolute;left:8px;right:8px;top:32px;bottom:8px}}
.nodata{{position:absolute;left:0;right:0;top:40%;text-align:center;color:{TEXT_WEAK};font-size:14px}}
.legend{{overflow:hidden;line-height:18px;padding-top:4px}}
.li{{display:inline-block;margin-right:14px;white-space:nowrap;color:{TEXT}}}
.li i{{display:inline-block;width:14px;height:4px;border-radius:2px;margin-right:6px;vertical-align:middle}}
.stat .title{{color:#fff}}
.sbody{{position:absolute;left:8px;right:8px;top:32px;bottom:8px;display:flex;
  align-items:center;justify-content:space-around}}
.scell{{text-align:center}} .sval{{font-weight:500;line-height:1.1;white-space:nowrap}}
.sname{{color:#fff;font-size:12px}}
.foot{{position:absolute;left:{MARGIN}px;right:{MARGIN}px;bottom:6px;color:{TEXT_WEAK};font-size:11px}}
</style></head><body>
<div class="head"><h1>{esc(dash.get('title', ''))}</h1>
<div class="range">{ts(start)} to {ts(end)} UTC</div>
<span class="var"><b>{esc(var_labels.get("datasource", "Data source"))}</b>Prometheus</span>{var_html}</div>
{''.join(body)}
<div class="foot">The panels and queries of {esc(a.dashboard.split('/')[-1])}, drawn by
scripts/dashboard_render.py (not Grafana) from a real Prometheus; $__rate_interval = {esc(a.rate_interval)},
step {int(step)}s.</div>
</body></html>
"""
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(page)
    print(height)


if __name__ == "__main__":
    main()
