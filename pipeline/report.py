"""One self-contained HTML page about a finished local run.

    python -m pipeline.report [--pipeline-root DIR] [--run RUN_ID] [--output FILE]

Reads the run from its ML Metadata (the artifacts of that run's executions,
not whatever happens to lie on disk) and writes one HTML file: per-split data
statistics, the inferred schema, anomalies, the vocabulary, caption lengths,
loss curves, perplexity against the baselines and a few scored eval captions.

Self-contained on purpose: TFDV's own visualisation loads its scripts from a
CDN and renders blank offline, so this page is plain HTML with inline CSS and
inline SVG charts drawn here, no scripts, fonts or images to fetch. Every
value taken from the data is HTML-escaped (captions hold quotes, < and &).

If the run is unfinished (e.g. no model yet) the page still shows what exists
and names each missing artifact; the command then exits with status 1.

The `*_fragment` and `svg_*` functions are pure (data in, HTML out) so tests
can feed them small synthetic inputs; the `load_*` functions do the I/O.
"""

import argparse
import collections
import dataclasses
import glob
import html
import json
import math
import os
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from pipeline import config, validate

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
BASELINE_NAMES = {
    'kneser_ney_trigram': 'Kneser-Ney trigram',
    'unigram_add_one': 'add-one unigram',
}
CHART_WIDTH, CHART_HEIGHT = 720, 280
MARGIN = {'left': 64, 'right': 16, 'top': 16, 'bottom': 48}

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1a202c; background: #f7fafc; margin: 0; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 2px solid #e2e8f0; }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.meta, p.note { color: #4a5568; margin: 4px 0; }
code { font: 12px/1.3 ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 8px; }
.card { background: #fff; border: 1px solid #e2e8f0; border-radius: 8px; padding: 10px 16px; min-width: 130px; }
.card .label { color: #4a5568; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; }
table { border-collapse: collapse; background: #fff; margin: 6px 0 10px; font-size: 13px; }
th, td { border: 1px solid #e2e8f0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #edf2f7; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafcfe; }
.state-COMPLETE, .state-CACHED { color: #276749; }
.state-FAILED, .state-CANCELED { color: #c53030; font-weight: 600; }
.missing { background: #fff5f5; border: 1px solid #feb2b2; border-radius: 6px; padding: 8px 12px; color: #9b2c2c; }
.ok { color: #276749; }
.anomaly { color: #c53030; }
.tokens { display: flex; flex-wrap: wrap; gap: 6px; padding: 0; list-style: none; }
.tokens li { background: #fff; border: 1px solid #e2e8f0; border-radius: 4px; padding: 2px 8px; }
.tokens li small { color: #718096; }
svg { background: #fff; border: 1px solid #e2e8f0; border-radius: 6px; display: block; margin: 6px 0; }
svg text { font: 11px system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; fill: #2d3748; }
.legend span { display: inline-block; margin-right: 16px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: -1px; }
"""


class MissingArtifact(Exception):
  """An artifact or file the report needs is not there; the message names it."""


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


def value_span(key: str, text: str, tag: str = 'span', css: str = '') -> str:
  """A number the reader (and the browser test) can find: `data-key` names it."""
  cls = f' class="{css}"' if css else ''
  return f'<{tag}{cls} data-key="{esc(key)}">{esc(text)}</{tag}>'


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


# ------------------------------------------------------------------ fragments
def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          numeric: Sequence[bool] = ()) -> str:
  """An HTML table; cells are HTML already (callers escape), headers are text."""
  numeric = list(numeric) + [False] * (len(headers) - len(numeric))
  head = ''.join(f'<th{" class=num" if n else ""}>{esc(h)}</th>' for h, n in zip(headers, numeric))
  body = ''.join('<tr>' + ''.join(f'<td{" class=num" if n else ""}>{c}</td>'
                                  for c, n in zip(row, numeric)) + '</tr>' for row in rows)
  return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def section(title: str, body: str, anchor: str) -> str:
  return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def missing_fragment(reason: str) -> str:
  """What a section shows when its artifact is missing: which one, and why."""
  return f'<p class="missing">Not available: {esc(reason)}</p>'


def header_fragment(run_id: str, pipeline_root: str,
                    cards: Sequence[Tuple[str, str, Optional[str]]]) -> str:
  """Title, run id and the key numbers as cards: (label, data-key, text or None)."""
  card_html = ''.join(
      f'<div class="card"><div class="label">{esc(label)}</div>'
      + (value_span(key, text, 'div', 'value') if text is not None
         else '<div class="value">&ndash;</div>') + '</div>'
      for label, key, text in cards)
  return (f'<header><h1>{esc(config.PIPELINE_NAME)} run report</h1>'
          f'<p class="meta">run {value_span("run_id", run_id)} &middot; pipeline root '
          f'<code>{esc(pipeline_root)}</code></p><div class="cards">{card_html}</div></header>')


def components_fragment(runs: Sequence[Any]) -> str:
  """The run's components (metadata.ComponentRun): state and seconds each."""
  rows = [[esc(r.component), f'<span class="state-{esc(r.state)}">{esc(r.state)}</span>',
           esc(f'{r.seconds:.1f}')] for r in runs]
  missing = [c for c in config.COMPONENTS if c not in {r.component for r in runs}]
  note = (f'<p class="note">Not in this run: {esc(", ".join(missing))}.</p>' if missing else '')
  if any(r.state == 'CACHED' for r in runs):
    note += ('<p class="note">CACHED: the component reused the outputs of an earlier execution '
             'with the same inputs, code and settings; those outputs are shown here.</p>')
  return table(['component', 'state', 'seconds'], rows, [False, False, True]) + note


def _top_values(stats: Any, limit: int = 3, width: int = 48) -> str:
  shown = []
  for top in list(stats.top_values)[:limit]:
    text = top.value if len(top.value) <= width else top.value[:width - 1] + '\u2026'
    shown.append(f'<code>{esc(text)}</code> ({esc(fmt_int(top.frequency))})')
  return '<br>'.join(shown)


def statistics_fragment(stats_by_split: Dict[str, Any]) -> str:
  """Per split: example count, then numeric and string features in two tables.

  `stats_by_split` maps a split name to a DatasetFeatureStatistics proto
  (StatisticsGen's Split-<name>/FeatureStats.pb holds a list of one).
  """
  parts = []
  for split, dataset in stats_by_split.items():
    parts.append(f'<h3>{esc(split)}: {value_span(f"num_examples/{split}", fmt_int(dataset.num_examples))}'
                 f' examples</h3>')
    numeric, strings = [], []
    for feature in dataset.features:
      name = '.'.join(feature.path.step) or feature.name
      kind = feature.WhichOneof('stats')
      if kind == 'num_stats':
        s = feature.num_stats
        common = s.common_stats
        numeric.append([f'<code>{esc(name)}</code>',
                        esc(fmt_int(common.num_non_missing)), esc(fmt_int(common.num_missing)),
                        esc(fmt_num(s.mean)), esc(fmt_num(s.std_dev)), esc(fmt_num(s.min)),
                        esc(fmt_num(s.median)), esc(fmt_num(s.max)), esc(fmt_int(s.num_zeros))])
      elif kind == 'string_stats':
        s = feature.string_stats
        common = s.common_stats
        strings.append([f'<code>{esc(name)}</code>',
                        esc(fmt_int(common.num_non_missing)), esc(fmt_int(common.num_missing)),
                        esc(fmt_int(s.unique)), esc(f'{s.avg_length:.1f}'), _top_values(s)])
    if numeric:
      parts.append(table(['numeric feature', 'present', 'missing', 'mean', 'std dev', 'min',
                          'median', 'max', 'zeros'], numeric, [False] + [True] * 8))
    if strings:
      parts.append(table(['string feature', 'present', 'missing', 'unique', 'avg length',
                          'top values (count)'], strings, [False, True, True, True, True]))
  if parts:
    parts.append('<p class="note">Unique counts and top values of string features are sketch '
                 'estimates (<code>pipeline.pipeline.statistics_options</code>) and medians come from '
                 'quantile sketches; counts, mean, std dev, min and max are exact. Average length '
                 'is in characters.</p>')
  return ''.join(parts)


def schema_fragment(schema: Any) -> str:
  """SchemaGen's inferred schema (a tensorflow_metadata Schema proto)."""
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  rows = []
  for feature in schema.feature:
    presence = ('required' if feature.presence.min_fraction >= 1.0
                else f'optional (min fraction {feature.presence.min_fraction:g})')
    if feature.HasField('shape'):
      shape = '[' + ', '.join(str(d.size) for d in feature.shape.dim) + ']'
    elif feature.HasField('value_count'):
      shape = f'{feature.value_count.min}..{feature.value_count.max} values'
    else:
      shape = 'variable length'
    domain = feature.domain or ''
    if feature.HasField('int_domain'):
      domain = f'{feature.int_domain.min}..{feature.int_domain.max}'
    rows.append([f'<code>{esc(feature.name)}</code>',
                 esc(schema_pb2.FeatureType.Name(feature.type)), esc(presence), esc(shape),
                 esc(domain)])
  parts = [table(['feature', 'type', 'presence', 'shape', 'domain'], rows)]
  for domain in schema.string_domain:
    values = ', '.join(f'<code>{esc(v)}</code>' for v in domain.value)
    parts.append(f'<p class="note">domain <b>{esc(domain.name)}</b> '
                 f'({len(domain.value)} values): {values}</p>')
  return ''.join(parts)


def input_fragment(report: Dict[str, Any], limit: int = 50) -> str:
  """ExampleGen's input checks: rows read, rejected and repaired, and each
  problem with its file, line and column (pipeline/validate.py)."""
  problems = report.get('problems', [])
  counts = validate.input_counts(report)
  summary = (f'<p>{value_span("input/rows_read", fmt_int(counts.read))} rows read, '
             f'{value_span("input/examples", fmt_int(counts.written))} examples written, '
             f'{value_span("input/rejected", fmt_int(counts.rejected))} rows rejected, '
             f'{value_span("input/repairs", fmt_int(counts.repairs))} repairs; '
             f'{fmt_int(report.get("long_captions", 0))} captions longer than '
             f'{config.MAX_TOKENS} words (Transform keeps their first {config.MAX_TOKENS} tokens).</p>')
  if not problems:
    return summary
  rows = [[esc(p['path']), str(p['line']), esc(p['column']), esc(p['message']), esc(p['action'])]
          for p in problems[:limit]]
  more = (f'<p>... and {len(problems) - limit} more in the input report.</p>'
          if len(problems) > limit else '')
  return summary + table(['file', 'line', 'column', 'problem', 'action'], rows) + more


def anomalies_fragment(found: Dict[str, List[str]]) -> str:
  """ExampleValidator's findings per split ('feature: description' lines), or 'none'."""
  if not found:
    return '<p class="missing">The anomalies artifact holds no split.</p>'
  parts = []
  for split, lines in found.items():
    if lines:
      items = ''.join(f'<li class="anomaly">{esc(line)}</li>' for line in lines)
      parts.append(f'<h3>{esc(split)}: {value_span(f"anomalies/{split}", str(len(lines)))} '
                   f'anomalies</h3><ul>{items}</ul>')
    else:
      parts.append(f'<p><b>{esc(split)}</b>: <span class="ok" data-key="anomalies/{esc(split)}">'
                   f'none</span> against the schema</p>')
  return ''.join(parts)


def vocabulary_fragment(tokens: Sequence[str], counts: Optional[Dict[str, int]],
                        top_n: int = config.REPORT_TOP_TOKENS) -> str:
  """Vocabulary size and its first `top_n` tokens (the file is most frequent
  first), with their train counts and share when known."""
  total = sum(counts.values()) if counts else 0
  items = []
  for rank, token in enumerate(tokens[:top_n], 1):
    count = ''
    if counts and token in counts:
      count = f' <small>{esc(fmt_int(counts[token]))} &middot; {100 * counts[token] / total:.1f}%</small>'
    items.append(f'<li><small>{rank}.</small> <code>{esc(token)}</code>{count}</li>')
  return (f'<p>{value_span("vocab_size", fmt_int(len(tokens)))} tokens in the vocabulary '
          f'(<code>{esc(config.VOCAB_NAME)}</code>, learnt on the train split), plus '
          f'{config.NUM_OOV_BUCKETS} out-of-vocabulary bucket. The {min(top_n, len(tokens))} '
          f'most frequent' + (' (train count &middot; share of train tokens)' if counts else '')
          + f':</p><ol class="tokens">{"".join(items)}</ol>')


def length_histogram(lengths: Sequence[int], cap: int = config.REPORT_MAX_LENGTH) -> List[int]:
  """Counts of captions with 0..cap tokens; the last bin holds every caption of
  `cap` tokens or more, so one odd caption cannot stretch the axis."""
  counts = [0] * (cap + 1)
  for n in lengths:
    counts[min(int(n), cap)] += 1
  return counts


def lengths_fragment(lengths_by_split: Dict[str, Sequence[int]], max_tokens: int,
                     cap: int = config.REPORT_MAX_LENGTH) -> str:
  """Caption length in tokens per split, as shares so splits of different size
  compare; the lengths the model truncates (beyond `max_tokens`) are tinted."""
  histograms = {split: length_histogram(v, cap) for split, v in lengths_by_split.items()}
  used = [i for h in histograms.values() for i, c in enumerate(h) if c]
  first = min(used) if used else 0
  labels = [str(i) if i < cap else f'{cap}+' for i in range(first, cap + 1)]
  last = max(used) if used else cap
  labels = labels[:last - first + 1]
  shares = {split: [100.0 * c / max(1, sum(h)) for c in h[first:last + 1]]
            for split, h in histograms.items()}
  shade = max(0, max_tokens + 1 - first) if max_tokens + 1 - first < len(labels) else None
  chart = svg_histogram(labels, shares, title='Caption length in tokens, per split',
                        x_label='tokens per caption (after cleaning)', y_label='% of captions',
                        shade_from=shade, shade_label=f'truncated to {max_tokens} tokens')
  rows = []
  for split, values in lengths_by_split.items():
    values = sorted(values)
    n = len(values)
    longer = sum(1 for v in values if v > max_tokens)
    rows.append([esc(split), esc(fmt_int(n)),
                 esc(f'{sum(values) / n:.2f}') if n else '', esc(values[n // 2]) if n else '',
                 esc(values[-1]) if n else '',
                 esc(f'{fmt_int(longer)} ({100 * longer / max(1, n):.1f}%)')])
  note = (f'<p class="note">Tokens as the model sees them: the Transform cleaning '
          f'(<code>modules.preprocessing.tokenize</code>) applied to the raw captions of each split. '
          f'TFDV describes a string feature by its length in characters only, and Transform keeps '
          f'at most {esc(max_tokens)} tokens, so the counts come from the captions themselves.</p>')
  return (chart + legend([(s, s) for s in lengths_by_split]) + note
          + table(['split', 'captions', 'mean tokens', 'median', 'max',
                   f'longer than {max_tokens} (truncated)'], rows, [False] + [True] * 5))


def training_fragment(metrics: Dict[str, Any]) -> str:
  """Train and eval loss per epoch (Trainer's metrics.json history), the
  epoch whose weights were exported marked, and the numbers as a table."""
  history = metrics['history']
  epochs = [h['epoch'] for h in history]
  chart = svg_line_chart(
      epochs, {'train': [h['train_loss'] for h in history],
               'eval': [h['eval_loss'] for h in history]},
      title='Loss per epoch', x_label='epoch', y_label='loss (nats per token)',
      marker_x=metrics.get('best_epoch'), marker_label=f'kept: epoch {metrics.get("best_epoch")}')
  rows = [[esc(h['epoch']), esc(fmt_int(h['step'])), esc(f'{h["train_loss"]:.3f}'),
           esc(f'{h["eval_loss"]:.3f}'), esc(f'{h["eval_perplexity"]:.2f}'),
           esc(fmt_int(h['eval_captions'])), esc(f'{h["seconds"]:.0f}')] for h in history]
  hp = metrics.get('hyperparameters', {})
  note = (f'<p class="note">{esc(fmt_int(metrics["train_steps"]))} steps '
          f'({esc(hp.get("batch_size", "?"))} captions a step) in '
          f'{esc(round(metrics.get("train_seconds", 0)))} s; train loss is the running mean over '
          f'each epoch (with dropout), eval loss is measured after it on '
          f'{esc(fmt_int(history[-1]["eval_captions"]))} eval captions. Early stopping kept epoch '
          f'{value_span("best_epoch", str(metrics.get("best_epoch")))}.</p>') if history else ''
  return (chart + legend([('train', 'train loss'), ('eval', 'eval loss')]) + note
          + table(['epoch', 'step', 'train loss', 'eval loss', 'eval perplexity',
                   'eval captions', 'seconds'], rows, [True] * 7))


def perplexity_fragment(metrics: Dict[str, Any]) -> str:
  """Eval perplexity of the exported model against the count baselines on
  the same split and vocabulary: lower is better, the unigram is the floor
  any model must beat."""
  rows = [('GRU model (exported)', metrics['eval_perplexity'], COLOURS['model'])]
  rows += [(BASELINE_NAMES.get(k, k), v, COLOURS.get(k, COLOURS['axis']))
           for k, v in sorted(metrics['baselines'].items(), key=lambda kv: kv[1])]
  chart = svg_hbars(rows, title='Eval perplexity: model and baselines',
                    x_label='perplexity per predicted token (lower is better)')
  table_rows = [['GRU model (exported)', value_span('eval_perplexity', f'{metrics["eval_perplexity"]:.2f}'),
                 '']]
  for key, value in sorted(metrics['baselines'].items(), key=lambda kv: kv[1]):
    table_rows.append([esc(BASELINE_NAMES.get(key, key)), value_span(f'baseline/{key}', f'{value:.2f}'),
                       esc(f'{metrics["eval_perplexity"] / value:.3f}')])
  note = (f'<p class="note">On all {esc(fmt_int(metrics["num_eval_captions"]))} eval captions '
          f'({esc(fmt_int(metrics["num_eval_tokens"]))} predicted tokens: each kept token and the end '
          f'marker), {esc(fmt_int(metrics["num_classes"]))} classes.</p>')
  return chart + note + table(['model', 'eval perplexity', 'GRU model \u00f7 this'], table_rows,
                              [False, True, True])


def captions_fragment(scored: Sequence[Tuple[int, str, float, float]]) -> str:
  """Eval captions with the exported model's scores, best first:
  (caption id, caption, perplexity, log-likelihood)."""
  rows = [[esc(cid), f'<span data-key="caption">{esc(caption)}</span>',
           f'<span data-key="caption_perplexity">{esc(f"{ppl:.2f}")}</span>', esc(f'{ll:.2f}')]
          for cid, caption, ppl, ll in sorted(scored, key=lambda r: r[2])]
  return ('<p class="note">Eval-split captions, spread evenly over the split by caption id, as '
          'the exported model scores them through its <code>score_captions</code> signature '
          '(raw text in; the Transform graph is inside the model).</p>'
          + table(['caption id', 'caption', 'perplexity', 'log-likelihood'], rows,
                  [True, False, True, True]))


def sources_fragment(outputs: Dict[str, Dict[str, str]]) -> str:
  """The artifact URIs this page was made from, for anyone checking a number."""
  rows = [[esc(component), esc(key), f'<code>{esc(uri)}</code>']
          for component, keys in outputs.items() for key, uri in sorted(keys.items())]
  return table(['component', 'output', 'uri'], rows)


def page(title: str, fragments: Sequence[str]) -> str:
  """The whole document: inline CSS, no scripts, nothing fetched."""
  return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
          '<meta name="viewport" content="width=device-width, initial-scale=1">'
          f'<title>{esc(title)}</title><style>{CSS}</style></head><body><main>'
          + ''.join(fragments) + '</main></body></html>\n')


# ------------------------------------------------------------------ loading
@dataclasses.dataclass
class Run:
  """One pipeline run as ML Metadata records it."""
  run_id: str
  components: List[Any]                 # metadata.ComponentRun, in execution order
  outputs: Dict[str, Dict[str, str]]    # component -> output key -> uri
  store: Any = None

  def output(self, component: str, key: str) -> str:
    """The URI of a component's output, or MissingArtifact saying why not."""
    if key in self.outputs.get(component, {}):
      return self.outputs[component][key]
    states = {r.component: r.state for r in self.components}
    why = (f'{component} is {states[component]} in run {self.run_id}' if component in states
           else f'{component} did not run in run {self.run_id}')
    raise MissingArtifact(f"{component}'s {key!r} artifact ({why})")


def require_file(path: str, what: str) -> str:
  if not os.path.exists(path):
    raise MissingArtifact(f'{what}: {path} does not exist')
  return path


def load_run(pipeline_root: str, run_id: Optional[str] = None) -> Run:
  """The run (default: the latest) from the pipeline root's ML Metadata."""
  from pipeline import metadata  # pylint: disable=g-import-not-at-top
  store = metadata.open_store(config.local_metadata_path(pipeline_root))
  ids = metadata.run_ids(store)
  if run_id is None and ids:
    run_id = ids[-1]
  if run_id not in ids:
    raise LookupError(f'no pipeline run {run_id!r} in {config.local_metadata_path(pipeline_root)}'
                      + (f'; runs: {", ".join(ids)}' if ids else ': has the pipeline run yet?'))
  return Run(run_id, metadata.component_runs(store, run_id),
             metadata.run_outputs(store, run_id), store)


def load_statistics(uri: str) -> Dict[str, Any]:
  """StatisticsGen's Split-*/FeatureStats.pb -> {split: DatasetFeatureStatistics}."""
  from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=g-import-not-at-top
  found = {}
  for path in sorted(glob.glob(os.path.join(uri, 'Split-*', 'FeatureStats.pb'))):
    with open(path, 'rb') as f:
      stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
    found[os.path.basename(os.path.dirname(path))[len('Split-'):]] = stats.datasets[0]
  if not found:
    raise MissingArtifact(f'statistics: no Split-*/FeatureStats.pb under {uri}')
  return dict(sorted(found.items(), key=lambda kv: _split_order(kv[0])))


def _split_order(split: str) -> Tuple[int, str]:
  """Splits in the order config.SPLIT_BUCKETS names them (train, then eval)."""
  names = list(config.SPLIT_BUCKETS)
  return (names.index(split) if split in names else len(names), split)


def load_schema(uri: str) -> Any:
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  path = require_file(os.path.join(uri, 'schema.pbtxt'), 'schema')
  with open(path) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def load_input_report(examples_uri: str) -> Dict[str, Any]:
  """The fast ExampleGen executor's counts and problems (pipeline/fast_csv.py)."""
  from pipeline import fast_csv  # pylint: disable=g-import-not-at-top
  report = fast_csv.read_input_report(examples_uri)
  if report is None:
    raise MissingArtifact('input report (written by the fast ExampleGen executor): '
                          f'{os.path.join(examples_uri, fast_csv.INPUT_REPORT)} does not exist')
  return report


def load_anomalies(uri: str) -> Dict[str, List[str]]:
  from pipeline import metadata  # pylint: disable=g-import-not-at-top
  require_file(uri, 'anomalies')
  found = metadata.anomalies(uri)
  return dict(sorted(found.items(), key=lambda kv: _split_order(kv[0])))


def load_vocabulary(transform_graph_uri: str) -> List[str]:
  """Transform's vocabulary file: one token per line, most frequent first."""
  path = require_file(os.path.join(transform_graph_uri, 'transform_fn', 'assets', config.VOCAB_NAME),
                      'vocabulary')
  with open(path, 'rb') as f:
    lines = f.read().split(b'\n')
  if lines and lines[-1] == b'':
    lines.pop()
  return [line.decode('utf-8', 'replace') for line in lines]


def load_metrics(model_uri: str) -> Dict[str, Any]:
  """The Trainer's metrics.json (next to Format-Serving)."""
  path = require_file(os.path.join(model_uri, 'metrics.json'), "the Trainer's metrics")
  with open(path) as f:
    return json.load(f)


def transform_max_tokens(run: Run) -> int:
  """MAX_TOKENS as this run's Transform used it (its recorded custom_config;
  the current environment may say otherwise), else the configured value."""
  execution_ids = [r.execution_id for r in run.components if r.component == 'Transform']
  if execution_ids and run.store is not None:
    execution = run.store.get_executions_by_id(execution_ids[-1:])[0]
    raw = execution.custom_properties.get('custom_config')
    if raw is not None and raw.string_value:
      return json.loads(raw.string_value).get('max_tokens', config.MAX_TOKENS)
  return config.transform_config()['max_tokens']


def load_captions(examples_uri: str) -> Dict[str, List[Tuple[int, str]]]:
  """(caption id, caption) of every example per split of ExampleGen's output."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found = {}
  for split_dir in sorted(glob.glob(os.path.join(examples_uri, 'Split-*'))):
    files = sorted(glob.glob(os.path.join(split_dir, '*')))
    spec = {config.CAPTION_KEY: tf.io.VarLenFeature(tf.string),
            config.CAPTION_ID_KEY: tf.io.VarLenFeature(tf.int64)}
    rows = []
    for batch in tf.data.TFRecordDataset(files, compression_type='GZIP').batch(4096):
      parsed = tf.io.parse_example(batch, spec)
      captions = tf.sparse.to_dense(parsed[config.CAPTION_KEY], default_value=b'')
      ids = tf.sparse.to_dense(parsed[config.CAPTION_ID_KEY], default_value=-1)
      for cid, caption in zip(ids.numpy().tolist(), captions.numpy().tolist()):
        rows.append((cid[0] if cid else -1, caption[0].decode('utf-8') if caption else ''))
    found[os.path.basename(split_dir)[len('Split-'):]] = rows
  if not found:
    raise MissingArtifact(f'examples: no Split-* under {examples_uri}')
  return dict(sorted(found.items(), key=lambda kv: _split_order(kv[0])))


def token_lengths_and_counts(captions: Sequence[str],
                             count: bool) -> Tuple[List[int], Dict[str, int]]:
  """Tokens per caption with the model's own cleaning, and (if `count`)
  how often each token occurs: the vocabulary's counts are not stored."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modules import preprocessing  # pylint: disable=g-import-not-at-top
  lengths, counts = [], collections.Counter()
  for start in range(0, len(captions), 8192):
    tokens = preprocessing.tokenize(tf.constant(list(captions[start:start + 8192]), tf.string))
    lengths += tokens.row_lengths().numpy().tolist()
    if count:
      unique, _, n = tf.unique_with_counts(tokens.flat_values)
      counts.update(dict(zip((u.decode('utf-8', 'replace') for u in unique.numpy().tolist()),
                             n.numpy().tolist())))
  return lengths, dict(counts)


def sample_evenly(rows: Sequence[Tuple[int, str]], n: int) -> List[Tuple[int, str]]:
  """`n` rows spread over the rows sorted by caption id: the same captions on
  every report of the same data, and not just the first few images."""
  ordered = sorted(rows)
  if len(ordered) <= n:
    return ordered
  return [ordered[i * len(ordered) // n] for i in range(n)]


def score_captions(model_dir: str, captions: Sequence[str]) -> List[Tuple[float, float]]:
  """(perplexity, log-likelihood) per caption from the exported model."""
  from pipeline import score  # pylint: disable=g-import-not-at-top
  require_file(os.path.join(model_dir, 'saved_model.pb'), 'the exported model')
  return score.score(model_dir, list(captions))


def score_sample(run: Run, model_uri: Any, captions: Any) -> List[Tuple[int, str, float, float]]:
  """A few eval captions with the exported model's scores: (id, caption,
  perplexity, log-likelihood). Needs the Trainer's model and the examples."""
  for value in (model_uri, captions):
    if isinstance(value, MissingArtifact):
      raise value
  eval_split = list(config.SPLIT_BUCKETS)[-1]
  if eval_split not in captions:
    raise MissingArtifact(f"examples: no Split-{eval_split} in {run.output('CsvExampleGen', 'examples')}")
  sample = sample_evenly(captions[eval_split], config.REPORT_CAPTIONS)
  scores = score_captions(os.path.join(model_uri, 'Format-Serving'), [c for _, c in sample])
  return [(cid, caption, ppl, ll) for (cid, caption), (ppl, ll) in zip(sample, scores)]


# ------------------------------------------------------------------ assembly
@dataclasses.dataclass
class Report:
  html: str
  missing: List[str]     # one line per artifact the page had to go without


def _attempt(missing: List[str], load: Callable[[], Any]) -> Any:
  """Runs a loader; a MissingArtifact is recorded and returned instead."""
  try:
    return load()
  except MissingArtifact as error:
    if str(error) not in missing:
      missing.append(str(error))
    return error


def build_report(pipeline_root: str, run_id: Optional[str] = None) -> Report:
  """The report of one run (default: the latest) of a local pipeline root."""
  return report_of(load_run(pipeline_root, run_id), pipeline_root)


def report_of(run: Run, pipeline_root: str) -> Report:
  """The page for a run whose artifacts may be partly missing: each section
  renders from its own artifact or says which one it lacks and why."""
  missing: List[str] = []
  stats = _attempt(missing, lambda: load_statistics(run.output('StatisticsGen', 'statistics')))
  schema = _attempt(missing, lambda: load_schema(run.output('SchemaGen', 'schema')))
  found = _attempt(missing, lambda: load_anomalies(run.output('ExampleValidator', 'anomalies')))
  vocab = _attempt(missing, lambda: load_vocabulary(run.output('Transform', 'transform_graph')))
  model_uri = _attempt(missing, lambda: run.output('Trainer', 'model'))
  metrics = (model_uri if isinstance(model_uri, MissingArtifact)
             else _attempt(missing, lambda: load_metrics(model_uri)))
  # With images on, the captions the model saw are ImageExampleGen's.
  caption_source = (config.IMAGE_COMPONENT if config.IMAGE_COMPONENT in run.outputs
                    else 'CsvExampleGen')
  captions = _attempt(missing, lambda: load_captions(run.output(caption_source, 'examples')))
  input_report = _attempt(missing, lambda: load_input_report(run.output('CsvExampleGen',
                                                                         'examples')))

  lengths, counts = {}, None
  if not isinstance(captions, MissingArtifact):
    for split, rows in captions.items():
      lengths[split], split_counts = token_lengths_and_counts(
          [c for _, c in rows], count=(split == 'train'))
      counts = split_counts if split == 'train' else counts

  scored = _attempt(missing, lambda: score_sample(run, model_uri, captions))

  def ok(value):
    return not isinstance(value, MissingArtifact)

  def body(value, render):
    return render(value) if ok(value) else missing_fragment(str(value))

  cards = []
  for split in config.SPLIT_BUCKETS:
    cards.append((f'{split} captions', f'num_examples/{split}',
                  fmt_int(stats[split].num_examples) if ok(stats) and split in stats else None))
  cards.append(('vocabulary', 'vocab_size', fmt_int(len(vocab)) if ok(vocab) else None))
  cards.append(('eval perplexity', 'eval_perplexity',
                f'{metrics["eval_perplexity"]:.2f}' if ok(metrics) else None))
  for key, name in BASELINE_NAMES.items():
    cards.append((name, f'baseline/{key}',
                  f'{metrics["baselines"][key]:.2f}' if ok(metrics) and key in metrics['baselines']
                  else None))

  lengths_value = captions if not ok(captions) else lengths
  max_tokens = transform_max_tokens(run)
  fragments = [
      header_fragment(run.run_id, pipeline_root, cards),
      ('<div class="missing"><b>Incomplete run:</b><ul>'
       + ''.join(f'<li>{esc(m)}</li>' for m in missing) + '</ul></div>') if missing else '',
      section('Components', components_fragment(run.components), 'components'),
      section('Input checks (ExampleGen)', body(input_report, input_fragment), 'input'),
      section('Data statistics per split', body(stats, statistics_fragment), 'statistics'),
      section('Schema (inferred by SchemaGen)', body(schema, schema_fragment), 'schema'),
      section('Anomalies (ExampleValidator)', body(found, anomalies_fragment), 'anomalies'),
      section('Vocabulary', body(vocab, lambda v: vocabulary_fragment(v, counts)), 'vocabulary'),
      section('Caption length', body(lengths_value, lambda v: lengths_fragment(v, max_tokens)),
              'lengths'),
      section('Training', body(metrics, training_fragment), 'training'),
      section('Perplexity against baselines', body(metrics, perplexity_fragment), 'perplexity'),
      section('Eval captions scored by the model', body(scored, captions_fragment), 'captions'),
      section('Sources', sources_fragment(run.outputs), 'sources'),
  ]
  return Report(page(f'{config.PIPELINE_NAME} run {run.run_id}', fragments), missing)


def write_report(pipeline_root: str, output: Optional[str] = None,
                 run_id: Optional[str] = None) -> Tuple[str, List[str]]:
  """Builds and writes the report; returns its path and what it lacks."""
  report = build_report(pipeline_root, run_id)
  output = output or config.local_report_path(pipeline_root)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, 'w', encoding='utf-8') as f:
    f.write(report.html)
  return output, report.missing


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--pipeline-root', default=None,
                      help='local pipeline root (default: config.local_pipeline_root())')
  parser.add_argument('--run', default=None, help='pipeline run id (default: the latest)')
  parser.add_argument('--output', default=None,
                      help=f'HTML file to write (default: {config.REPORT_FILE} next to the metadata)')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # before TensorFlow loads
  warnings.filterwarnings('ignore', category=FutureWarning)  # google.api_core on Python 3.10
  pipeline_root = args.pipeline_root or config.local_pipeline_root()
  try:
    path, missing = write_report(pipeline_root, args.output, args.run)
  except (FileNotFoundError, LookupError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  print(f'report: {path}')
  for line in missing:
    print(f'missing: {line}', file=sys.stderr)
  return 1 if missing else 0


if __name__ == '__main__':
  sys.exit(main())
