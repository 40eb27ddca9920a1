"""The report's charts and number formatting: pure functions, data in, SVG out.

Inline SVG drawn here, so the page has nothing to fetch (no chart library,
no fonts); every label is HTML-escaped.
"""

import html
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# Chart and page colours: one series colour each, so a legend is never needed
# twice and the browser test can look for them in the screenshot.
COLOURS = {
    'train': '#2b6cb0',
    'eval': '#dd6b20',
    'model': '#2b6cb0',
    'kneser_ney_trigram': '#718096',
    'unigram_add_one': '#a0aec0',
    'truncated': '#fdf2e9',
    'grid': '#e2e8f0',
    'axis': '#4a5568',
}
CHART_WIDTH, CHART_HEIGHT = 720, 280
MARGIN = {'left': 64, 'right': 16, 'top': 16, 'bottom': 48}


def esc(value: Any) -> str:
  """HTML-escapes any value shown on the page (quotes too: values end up in attributes)."""
  return html.escape(str(value), quote=True)


# ------------------------------------------------------------------ numbers
def fmt_int(value: float) -> str:
  """Counts with thousands separators: 25,014 reads faster than 25014."""
  return f'{int(round(value)):,}'


def fmt_num(value: float) -> str:
  """Statistics of any magnitude at a readable precision."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ''
  if float(value).is_integer() and abs(value) < 1e15:
    return fmt_int(value)
  if abs(value) >= 1000:
    return f'{value:,.1f}'
  return f'{value:.4g}'


def nice_ticks(low: float, high: float, count: int = 5) -> List[float]:
  """Round axis ticks (steps of 1, 2 or 5 x 10^k) from at or below `low` to at
  or above `high`, so a chart's gridlines fall on numbers a person reads."""
  if not high > low:
    high = low + 1.0
  raw = (high - low) / count
  magnitude = 10 ** math.floor(math.log10(raw))
  step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
  start = math.floor(low / step + 1e-9) * step
  end = math.ceil(high / step - 1e-9) * step
  return [round(start + i * step, 10) for i in range(int(round((end - start) / step)) + 1)]


def _tick_label(value: float) -> str:
  return fmt_int(value) if float(value).is_integer() else f'{value:g}'


# ------------------------------------------------------------------ SVG charts
def _svg_open(label: str, width: int = CHART_WIDTH, height: int = CHART_HEIGHT) -> str:
  return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
          f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}">'
          f'<title>{esc(label)}</title>')


def _y_axis(ticks: List[float], y_of: Callable[[float], float], y_label: str,
            height: int) -> List[str]:
  """Horizontal gridlines with labels, and the rotated axis title."""
  parts = []
  for tick in ticks:
    y = y_of(tick)
    parts.append(f'<line x1="{MARGIN["left"]}" x2="{CHART_WIDTH - MARGIN["right"]}" '
                 f'y1="{y:.1f}" y2="{y:.1f}" stroke="{COLOURS["grid"]}"/>')
    parts.append(f'<text x="{MARGIN["left"] - 6}" y="{y + 4:.1f}" '
                 f'text-anchor="end">{esc(_tick_label(tick))}</text>')
  middle = (MARGIN['top'] + height - MARGIN['bottom']) / 2
  parts.append(f'<text x="14" y="{middle:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 14 {middle:.1f})">{esc(y_label)}</text>')
  return parts


def svg_histogram(labels: Sequence[str], series: Dict[str, Sequence[float]], *,
                  title: str, x_label: str, y_label: str,
                  shade_from: Optional[int] = None, shade_label: str = '') -> str:
  """Grouped bars, one group per label and one bar per series (split).

  `shade_from` tints the groups from that index on, e.g. the caption lengths
  the model never sees in full.
  """
  height = CHART_HEIGHT
  plot_w = CHART_WIDTH - MARGIN['left'] - MARGIN['right']
  plot_h = height - MARGIN['top'] - MARGIN['bottom']
  top = max([v for values in series.values() for v in values] + [0]) or 1.0
  ticks = nice_ticks(0.0, top, 4)
  y_of = lambda v: MARGIN['top'] + plot_h * (1 - v / ticks[-1])  # noqa: E731
  group_w = plot_w / max(1, len(labels))
  bar_w = group_w * 0.8 / max(1, len(series))
  parts = [_svg_open(title, height=height)]
  if shade_from is not None and shade_from < len(labels):
    x = MARGIN['left'] + shade_from * group_w
    parts.append(f'<rect x="{x:.1f}" y="{MARGIN["top"]}" width="{plot_w - shade_from * group_w:.1f}" '
                 f'height="{plot_h}" fill="{COLOURS["truncated"]}"/>')
    parts.append(f'<text x="{x + 6:.1f}" y="{MARGIN["top"] + 14}">{esc(shade_label)}</text>')
  parts += _y_axis(ticks, y_of, y_label, height)
  every = max(1, math.ceil(len(labels) / 24))  # at most ~24 x labels
  for i, label in enumerate(labels):
    x0 = MARGIN['left'] + i * group_w + group_w * 0.1
    for j, (name, values) in enumerate(series.items()):
      y = y_of(values[i])
      parts.append(f'<rect x="{x0 + j * bar_w:.1f}" y="{y:.1f}" width="{bar_w:.1f}" '
                   f'height="{MARGIN["top"] + plot_h - y:.1f}" fill="{COLOURS.get(name, "#4a5568")}">'
                   f'<title>{esc(name)} {esc(label)}: {esc(fmt_num(values[i]))}</title></rect>')
    if i % every == 0:
      parts.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{MARGIN["top"] + plot_h + 14}" '
                   f'text-anchor="middle">{esc(label)}</text>')
  parts.append(f'<text x="{MARGIN["left"] + plot_w / 2:.1f}" y="{height - 8}" '
               f'text-anchor="middle">{esc(x_label)}</text>')
  parts.append('</svg>')
  return ''.join(parts)


def svg_line_chart(x: Sequence[float], series: Dict[str, Sequence[float]], *,
                   title: str, x_label: str, y_label: str,
                   marker_x: Optional[float] = None, marker_label: str = '') -> str:
  """Lines with dots, one per series over shared x values; an optional
  dashed vertical marker (e.g. the epoch whose weights were kept)."""
  height = CHART_HEIGHT
  plot_w = CHART_WIDTH - MARGIN['left'] - MARGIN['right']
  plot_h = height - MARGIN['top'] - MARGIN['bottom']
  values = [v for vs in series.values() for v in vs]
  low, high = (min(values), max(values)) if values else (0.0, 1.0)
  pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
  ticks = nice_ticks(low - pad, high + pad, 5)
  y_of = lambda v: MARGIN['top'] + plot_h * (1 - (v - ticks[0]) / (ticks[-1] - ticks[0]))  # noqa: E731
  x_low, x_high = (min(x), max(x)) if x else (0, 1)
  span = (x_high - x_low) or 1.0
  x_of = lambda v: MARGIN['left'] + 12 + (plot_w - 24) * (v - x_low) / span  # noqa: E731
  parts = [_svg_open(title, height=height)]
  parts += _y_axis(ticks, y_of, y_label, height)
  for value in x:
    parts.append(f'<text x="{x_of(value):.1f}" y="{MARGIN["top"] + plot_h + 14}" '
                 f'text-anchor="middle">{esc(_tick_label(value))}</text>')
  if marker_x is not None:
    mx = x_of(marker_x)
    parts.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{MARGIN["top"]}" '
                 f'y2="{MARGIN["top"] + plot_h}" stroke="{COLOURS["axis"]}" stroke-dasharray="4 3"/>')
    anchor = 'end' if mx > MARGIN['left'] + plot_w * 0.7 else 'start'
    shift = -4 if anchor == 'end' else 4
    parts.append(f'<text x="{mx + shift:.1f}" y="{MARGIN["top"] + 12}" '
                 f'text-anchor="{anchor}">{esc(marker_label)}</text>')
  for name, ys in series.items():
    colour = COLOURS.get(name, COLOURS['axis'])
    points = ' '.join(f'{x_of(a):.1f},{y_of(b):.1f}' for a, b in zip(x, ys))
    parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
    for a, b in zip(x, ys):
      parts.append(f'<circle cx="{x_of(a):.1f}" cy="{y_of(b):.1f}" r="4" fill="{colour}">'
                   f'<title>{esc(name)} at {esc(_tick_label(a))}: {esc(fmt_num(b))}</title></circle>')
  parts.append(f'<text x="{MARGIN["left"] + plot_w / 2:.1f}" y="{height - 8}" '
               f'text-anchor="middle">{esc(x_label)}</text>')
  parts.append('</svg>')
  return ''.join(parts)


def svg_hbars(rows: Sequence[Tuple[str, float, str]], *, title: str, x_label: str) -> str:
  """Horizontal bars (label, value, colour) with the value printed at the end:
  a few numbers of one kind side by side, e.g. perplexities."""
  row_h, label_w = 36, 180
  height = MARGIN['top'] + row_h * len(rows) + MARGIN['bottom']
  plot_w = CHART_WIDTH - label_w - MARGIN['right'] - 60
  top = max([v for _, v, _ in rows] + [0]) or 1.0
  ticks = nice_ticks(0.0, top, 5)
  x_of = lambda v: label_w + plot_w * v / ticks[-1]  # noqa: E731
  bottom = MARGIN['top'] + row_h * len(rows)
  parts = [_svg_open(title, height=height)]
  for tick in ticks:
    parts.append(f'<line x1="{x_of(tick):.1f}" x2="{x_of(tick):.1f}" y1="{MARGIN["top"]}" '
                 f'y2="{bottom}" stroke="{COLOURS["grid"]}"/>')
    parts.append(f'<text x="{x_of(tick):.1f}" y="{bottom + 14}" text-anchor="middle">'
                 f'{esc(_tick_label(tick))}</text>')
  for i, (label, value, colour) in enumerate(rows):
    y = MARGIN['top'] + i * row_h + 6
    parts.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{esc(label)}</text>')
    parts.append(f'<rect x="{label_w}" y="{y}" width="{x_of(value) - label_w:.1f}" '
                 f'height="{row_h - 12}" fill="{colour}"/>')
    parts.append(f'<text x="{x_of(value) + 6:.1f}" y="{y + 16}">{esc(f"{value:.2f}")}</text>')
  parts.append(f'<text x="{label_w + plot_w / 2:.1f}" y="{height - 8}" '
               f'text-anchor="middle">{esc(x_label)}</text>')
  parts.append('</svg>')
  return ''.join(parts)


def legend(names: Sequence[Tuple[str, str]]) -> str:
  """Colour keys for (series name, label) pairs, as HTML under a chart."""
  keys = ''.join(f'<span><i style="background:{COLOURS.get(name, COLOURS["axis"])}"></i>'
                 f'{esc(label)}</span>' for name, label in names)
  return f'<p class="legend">{keys}</p>'
