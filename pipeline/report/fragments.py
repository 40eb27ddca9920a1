"""The report's HTML: the page, tables, sections and one `*_fragment` per
section. Pure functions, data in, HTML out, so tests feed them small
synthetic inputs.

Self-contained on purpose: TFDV's own visualisation loads its scripts from a
CDN and renders blank offline, so the page is plain HTML with inline CSS and
the inline SVG charts of `charts`, no scripts, fonts or images to fetch.
Every value taken from the data is HTML-escaped (captions hold quotes, < and
&). A number the browser test reads back carries a `data-key` attribute.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

from modules import constants
from pipeline import settings
from pipeline.artifacts import files
from pipeline.report.charts import (COLOURS, esc, fmt_int, fmt_num, legend, svg_hbars,
                                    svg_histogram, svg_line_chart)

REPORT_TOP_TOKENS = 20       # most frequent vocabulary tokens listed
REPORT_MAX_LENGTH = 32       # caption-length histogram: longer captions share the last bar
BASELINE_NAMES = {
    'kneser_ney_trigram': 'Kneser-Ney trigram',
    'unigram_add_one': 'add-one unigram',
}

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


def value_span(key: str, text: str, tag: str = 'span', css: str = '') -> str:
  """A number the reader (and the browser test) can find: `data-key` names it."""
  cls = f' class="{css}"' if css else ''
  return f'<{tag}{cls} data-key="{esc(key)}">{esc(text)}</{tag}>'


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
  return (f'<header><h1>{esc(settings.PIPELINE_NAME)} run report</h1>'
          f'<p class="meta">run {value_span("run_id", run_id)} &middot; pipeline root '
          f'<code>{esc(pipeline_root)}</code></p><div class="cards">{card_html}</div></header>')


def components_fragment(runs: Sequence[Any], expected: Sequence[str]) -> str:
  """The run's components (metadata.ComponentRun): state, seconds and where
  each ran (the engine, with its job ids: a Flink job id per Beam stage), and
  the `expected` nodes (the pipeline's, as recorded) this run lacks."""
  rows = [[esc(r.component), f'<span class="state-{esc(r.state)}">{esc(r.state)}</span>',
           esc(f'{r.seconds:.1f}'), ran_on(r)] for r in runs]
  missing = [c for c in expected if c not in {r.component for r in runs}]
  note = (f'<p class="note">Not in this run: {esc(", ".join(missing))}.</p>' if missing else '')
  if any(r.state == 'CACHED' for r in runs):
    note += ('<p class="note">CACHED: the component reused the outputs of an earlier execution '
             'with the same inputs, code and settings; those outputs are shown here.</p>')
  return table(['component', 'state', 'seconds', 'ran on'], rows, [False, False, True, False]) + note


def ran_on(run: Any) -> str:
  if not run.engine:
    return ''
  jobs = ''.join(f'<br>job <code>{esc(j)}</code>' for j in run.jobs)
  return esc(run.engine) + jobs


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
  problem with its file, line and column (pipeline.csv_input)."""
  problems = report.get('problems', [])
  counts = files.input_counts(report)
  summary = (f'<p>{value_span("input/rows_read", fmt_int(counts.read))} rows read, '
             f'{value_span("input/examples", fmt_int(counts.written))} examples written, '
             f'{value_span("input/rejected", fmt_int(counts.rejected))} rows rejected, '
             f'{value_span("input/repairs", fmt_int(counts.repairs))} repairs; '
             f'{fmt_int(report.get("long_captions", 0))} captions longer than '
             f'{constants.MAX_TOKENS} words (Transform keeps their first {constants.MAX_TOKENS} tokens).</p>')
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
                        top_n: int = REPORT_TOP_TOKENS) -> str:
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
          f'(<code>{esc(constants.VOCAB_NAME)}</code>, learnt on the train split), plus '
          f'{constants.NUM_OOV_BUCKETS} out-of-vocabulary bucket. The {min(top_n, len(tokens))} '
          f'most frequent' + (' (train count &middot; share of train tokens)' if counts else '')
          + f':</p><ol class="tokens">{"".join(items)}</ol>')


def length_histogram(lengths: Sequence[int], cap: int = REPORT_MAX_LENGTH) -> List[int]:
  """Counts of captions with 0..cap tokens; the last bin holds every caption of
  `cap` tokens or more, so one odd caption cannot stretch the axis."""
  counts = [0] * (cap + 1)
  for n in lengths:
    counts[min(int(n), cap)] += 1
  return counts


def lengths_fragment(lengths_by_split: Dict[str, Sequence[int]], max_tokens: int,
                     cap: int = REPORT_MAX_LENGTH) -> str:
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
          f'each epoch (with dropout{train_loss_of(hp)}), eval loss is the exported '
          f'model\'s, measured after it on {esc(fmt_int(history[-1]["eval_captions"]))} eval '
          f'captions. Early stopping kept epoch '
          f'{value_span("best_epoch", str(metrics.get("best_epoch")))}.</p>') if history else ''
  return (chart + legend([('train', 'train loss'), ('eval', 'eval loss')]) + note
          + table(['epoch', 'step', 'train loss', 'eval loss', 'eval perplexity',
                   'eval captions', 'seconds'], rows, [True] * 7))


def train_loss_of(hp: Dict[str, Any]) -> str:
  """What the train loss is beyond the running mean: training scores the
  GRU alone, on a sampled softmax when one is set."""
  if hp.get('sampled_softmax'):
    return f'; the GRU alone on a {hp["sampled_softmax"]}-class sampled softmax, so lower'
  return '; the GRU alone' if hp.get('kneser_ney_weight') else ''


def model_name(metrics: Dict[str, Any]) -> str:
  """The exported model's name: the GRU, mixed with the Kneser-Ney model of
  its order when it is (a trigram in runs from before the order was a
  setting)."""
  hp = metrics.get('hyperparameters', {})
  if not hp.get('kneser_ney_weight'):
    return 'GRU model (exported)'
  order = hp.get('kneser_ney_order', 3)
  ngram = {2: 'bigram', 3: 'trigram'}.get(order, f'{order}-gram')
  return f'GRU + Kneser-Ney {ngram} (exported)'


def perplexity_fragment(metrics: Dict[str, Any]) -> str:
  """Eval perplexity of the exported model against the count baselines on
  the same split and vocabulary: lower is better, the unigram is the floor
  any model must beat."""
  rows = [(model_name(metrics), metrics['eval_perplexity'], COLOURS['model'])]
  rows += [(BASELINE_NAMES.get(k, k), v, COLOURS.get(k, COLOURS['axis']))
           for k, v in sorted(metrics['baselines'].items(), key=lambda kv: kv[1])]
  chart = svg_hbars(rows, title='Eval perplexity: model and baselines',
                    x_label='perplexity per predicted token (lower is better)')
  table_rows = [[esc(model_name(metrics)), value_span('eval_perplexity', f'{metrics["eval_perplexity"]:.2f}'),
                 '']]
  for key, value in sorted(metrics['baselines'].items(), key=lambda kv: kv[1]):
    table_rows.append([esc(BASELINE_NAMES.get(key, key)), value_span(f'baseline/{key}', f'{value:.2f}'),
                       esc(f'{metrics["eval_perplexity"] / value:.3f}')])
  note = (f'<p class="note">On all {esc(fmt_int(metrics["num_eval_captions"]))} eval captions '
          f'({esc(fmt_int(metrics["num_eval_tokens"]))} predicted tokens: each kept token and the end '
          f'marker), {esc(fmt_int(metrics["num_classes"]))} classes.</p>')
  return chart + note + table(['model', 'eval perplexity', 'model \u00f7 this'], table_rows,
                              [False, True, True])


def evaluation_fragment(found: Any, pushed: Optional[str]) -> str:
  """The Evaluator's view (TFMA, from the served model's own outputs): the
  blessing decision in one line, what was pushed, the whole split against
  the baselines, then every slice."""
  overall = found.overall
  decision = (f'<p>{value_span("blessing", found.decision(), "b")}</p>'
              f'<p>Pushed: {value_span("pushed", pushed or "nothing", "code")}</p>')
  rows = [['candidate (this run)', value_span('tfma/perplexity', f'{overall["perplexity"]:.2f}'),
           esc(f'{overall["perplexity_ratio_to_kneser_ney_trigram"]:.3f}')]]
  rows.append(['Kneser-Ney trigram (same split)',
               esc(f'{overall["kneser_ney_trigram_perplexity"]:.2f}'), '1.000'])
  if 'perplexity' in found.baseline:
    rows.append(['latest blessed model (baseline)', esc(f'{found.baseline["perplexity"]:.2f}'),
                 esc(f'{found.baseline["perplexity"] / overall["kneser_ney_trigram_perplexity"]:.3f}')])
  else:
    rows.append(['latest blessed model (baseline)', 'none yet', ''])
  whole = table(['model', 'eval perplexity', '\u00f7 trigram'], rows, [False, True, True])
  slice_rows = [[esc(name), esc(fmt_int(int(m.get('example_count', 0)))),
                 esc(fmt_int(int(m.get('predicted_tokens', 0)))),
                 value_span(f'tfma/{name}', f'{m["perplexity"]:.2f}')]
                for name, m in sorted(found.slices.items()) if name]
  slices = table(['slice', 'captions', 'predicted tokens', 'perplexity'], slice_rows,
                 [False, True, True, True])
  return (decision + whole + '<p class="note">Slices by caption length (kept tokens) and by '
          'image license; only the whole split is gated.</p>' + slices)


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
