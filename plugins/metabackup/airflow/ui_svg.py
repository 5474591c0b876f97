"""The Backups page's pictures, as inline SVG (no script, no library, nothing fetched: the page
works offline): per source, set size and run time over time (fulls and incrementals in their own
colours), and the chain diagram of the kept sets (F <- I <- I, one row per chain).

Every function takes the overview's set rows (newest first, as :mod:`metabackup.overview` gives
them) and returns SVG markup; every text is escaped."""

from __future__ import annotations

from html import escape
from typing import Any

import pendulum

WIDTH, HEIGHT = 360, 110
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 46, 18, 16


def size_text(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def seconds_text(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def run_seconds(row: dict[str, Any]) -> float | None:
    """From the run's execution time to the set's commit: what the run took to make it."""
    try:
        return max(0.0, (pendulum.parse(row["finished_at"]) - pendulum.parse(row["executed_at"])).total_seconds())
    except (KeyError, TypeError, ValueError):
        return None


def _bars(rows: list[dict[str, Any]], value, label, title: str, css: str, caption: str) -> str:
    """A bar per set, oldest on the left, height by ``value(row)``; ``label`` formats the axis."""
    points = [(row, value(row)) for row in reversed(rows)]
    points = [(row, v) for row, v in points if v is not None]
    if not points:
        return ""
    top = max(v for _, v in points) or 1
    inner_w, inner_h = WIDTH - PAD_LEFT - 4, HEIGHT - PAD_TOP - PAD_BOTTOM
    step = inner_w / len(points)
    bar_w = max(1.0, min(18.0, step * 0.8))
    parts = [f'<svg class="chart {css}" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             f'<line class="axis" x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{PAD_LEFT}" y2="{HEIGHT - PAD_BOTTOM}"/>',
             f'<line class="axis" x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}" x2="{WIDTH - 4}" y2="{HEIGHT - PAD_BOTTOM}"/>',
             f'<text class="tick" x="{PAD_LEFT - 4}" y="{PAD_TOP + 8}" text-anchor="end">{escape(label(top))}</text>',
             f'<text class="tick" x="{PAD_LEFT - 4}" y="{HEIGHT - PAD_BOTTOM}" text-anchor="end">0</text>',
             f'<text class="caption" x="{WIDTH - 4}" y="11" text-anchor="end">{escape(caption)}</text>']
    for i, (row, v) in enumerate(points):
        h = max(1.0, inner_h * v / top)
        x = PAD_LEFT + 2 + i * step
        kind = "full" if row["type"] == "full" else "incremental"
        parts.append(f'<rect class="bar {kind}" x="{x:.1f}" y="{HEIGHT - PAD_BOTTOM - h:.1f}" width="{bar_w:.1f}" '
                     f'height="{h:.1f}"><title>{escape(row["set"])} ({kind}): {escape(label(v))}</title></rect>')
    first, last = points[0][0]["executed_at"][:10], points[-1][0]["executed_at"][:10]
    parts.append(f'<text class="tick" x="{PAD_LEFT}" y="{HEIGHT - 4}">{escape(first)}</text>')
    if last != first:
        parts.append(f'<text class="tick" x="{WIDTH - 4}" y="{HEIGHT - 4}" text-anchor="end">{escape(last)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def size_chart(source: str, rows: list[dict[str, Any]]) -> str:
    return _bars(rows, lambda row: row["size"], size_text, f"{source}: set size over time", "size-chart", "set size")


def duration_chart(source: str, rows: list[dict[str, Any]]) -> str:
    return _bars(rows, run_seconds, seconds_text, f"{source}: run time over time (execution time to commit)",
                 "duration-chart", "run time")


def chains(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The kept sets grouped by chain (oldest chain first), each in chain order (its full, then each
    set after the one it depends on); the sets whose chain is broken form one last group."""
    groups: dict[str, list[dict[str, Any]]] = {}
    broken = []
    for row in reversed(rows):
        if row["restorable"]:
            groups.setdefault(row["chain_root"] or row["set"], []).append(row)
        else:
            broken.append(row)
    ordered = []
    for group in groups.values():
        by_name = {row["set"]: row for row in group}

        def depth(row: dict[str, Any], seen: int = 0) -> int:
            parent = by_name.get(row.get("parent") or "")
            return 0 if parent is None or seen > len(group) else 1 + depth(parent, seen + 1)

        ordered.append(sorted(group, key=lambda row: (depth(row), row["executed_at"])))
    return ordered + ([broken] if broken else [])


BOX_W, BOX_H, GAP, ROW_H = 34, 22, 20, 34


def chain_diagram(source: str, rows: list[dict[str, Any]]) -> str:
    """Each chain on a row: its full, then each incremental with an arrow to its parent."""
    groups = chains(rows)
    if not groups:
        return ""
    longest = max(len(g) for g in groups)
    width = 12 + longest * (BOX_W + GAP)
    height = 8 + len(groups) * ROW_H
    title = f"{source}: chains of the kept sets"
    parts = [f'<svg class="chain-diagram" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
             '<defs><marker id="arrowhead" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="6" markerHeight="6" '
             'orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" class="arrowhead"/></marker></defs>']
    for r, group in enumerate(groups):
        y = 6 + r * ROW_H
        where = {row["set"]: 6 + i * (BOX_W + GAP) for i, row in enumerate(group)}
        for i, row in enumerate(group):
            x = where[row["set"]]
            kind = "full" if row["type"] == "full" else "incremental"
            state = "" if row["restorable"] else " broken"
            letter = "F" if kind == "full" else "I"
            parts.append(f'<g class="set {kind}{state}"><title>{escape(row["set"])} ({kind}'
                         f'{"" if row["restorable"] else ", broken chain"}), {escape(row["executed_at"][:19])}</title>'
                         f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="4"/>'
                         f'<text x="{x + BOX_W / 2}" y="{y + 15}" text-anchor="middle">{letter}</text></g>')
            parent = row.get("parent")
            if parent in where:
                # the arrow points from the incremental to the set it depends on (F <- I)
                parts.append(f'<line class="link" x1="{x}" y1="{y + BOX_H / 2}" x2="{where[parent] + BOX_W + 1}" '
                             f'y2="{y + BOX_H / 2}" marker-end="url(#arrowhead)"/>')
    parts.append("</svg>")
    return "".join(parts)
