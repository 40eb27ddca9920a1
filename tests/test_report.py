"""The HTML run report (pipeline/report/, written by pipeline/tools/report.py).

Fast tests feed the fragment and chart functions small synthetic inputs. Slow
ones build the report of the shared pipeline run, compare its numbers with
values read independently of the report code, and render it in headless
Chromium with the network cut off: the page must make no request, the DOM
must hold the run's numbers and the screenshot must show the charts.
"""

import html.parser
import json
import math
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from modules import constants
from pipeline import report
from pipeline.artifacts import metadata
from pipeline.tools import report as report_tool

CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')   # tools/test-deps.sh installs it
NASTY = 'He said "no" <b>twice</b> & left \'early\' </td><script>alert(1)</script>'


# ------------------------------------------------------------------ helpers
class DataKeys(html.parser.HTMLParser):
  """Text of every element carrying a `data-key` (the report's named numbers)."""

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.values = {}
    self._open = []   # [key, tag, text parts] of open data-key elements

  def handle_starttag(self, tag, attrs):
    key = dict(attrs).get('data-key')
    if key is not None:
      self._open.append([key, tag, []])

  def handle_endtag(self, tag):
    if self._open and self._open[-1][1] == tag:
      key, _, text = self._open.pop()
      self.values.setdefault(key, []).append(''.join(text).strip())

  def handle_data(self, data):
    for element in self._open:
      element[2].append(data)


def data_keys(document: str) -> dict:
  parser = DataKeys()
  parser.feed(document)
  return parser.values


class References(html.parser.HTMLParser):
  """Everything in a page that could make a browser fetch something."""
  FETCHING = {'src', 'href', 'xlink:href', 'srcset', 'poster', 'data', 'action', 'background',
              'manifest', 'formaction', 'ping'}

  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.found = []
    self._in_style = False

  def handle_starttag(self, tag, attrs):
    if tag in ('script', 'link', 'iframe', 'object', 'embed', 'base'):
      self.found.append(f'<{tag}>')
    for name, value in attrs:
      if name in self.FETCHING and value and not value.startswith('#'):
        self.found.append(f'{name}={value}')
      if name == 'style' and re.search(r'url\(|@import', value or ''):
        self.found.append(f'style={value}')
    self._in_style = tag == 'style'

  def handle_data(self, data):
    if self._in_style and re.search(r'url\(|@import', data):
      self.found.append('url() or @import in <style>')


def external_references(document: str) -> list:
  parser = References()
  parser.feed(document)
  return parser.found


def numeric_stats(name, values):
  feature = statistics_pb2.FeatureNameStatistics(type=statistics_pb2.FeatureNameStatistics.INT)
  feature.path.step.append(name)
  s = feature.num_stats
  s.common_stats.num_non_missing = len(values)
  s.mean = sum(values) / len(values)
  s.min, s.max = min(values), max(values)
  return feature


def synthetic_statistics():
  dataset = statistics_pb2.DatasetFeatureStatistics(num_examples=12345)
  dataset.features.append(numeric_stats('image_id', [3, 4, 5, 1000000]))
  caption = dataset.features.add(type=statistics_pb2.FeatureNameStatistics.STRING)
  caption.path.step.append('caption')
  caption.string_stats.common_stats.num_non_missing = 12340
  caption.string_stats.common_stats.num_missing = 5
  caption.string_stats.unique = 12000
  caption.string_stats.top_values.add(value=NASTY, frequency=3)
  return {'train': dataset, 'eval': statistics_pb2.DatasetFeatureStatistics(num_examples=7)}


def synthetic_metrics():
  return {
      'eval_perplexity': 24.061, 'baselines': {'unigram_add_one': 202.437, 'kneser_ney_trigram': 37.95},
      'history': [{'epoch': e, 'step': 200 * e, 'train_loss': 5.0 - e / 3, 'eval_loss': 4.9 - e / 4,
                   'eval_perplexity': math.exp(4.9 - e / 4), 'eval_captions': 4096, 'seconds': 10.0 * e}
                  for e in (1, 2, 3, 4, 5)],
      'best_epoch': 5, 'train_steps': 1000, 'train_seconds': 50.0, 'num_eval_captions': 8389,
      'num_eval_tokens': 95164, 'num_classes': 5003, 'hyperparameters': {'batch_size': 128},
  }


# ------------------------------------------------------------------ fast: fragments
def test_captions_are_escaped_and_round_trip():
  fragment = report.captions_fragment([(7, NASTY, 12.5, -30.0), (8, 'a cat', 3.25, -4.0)])
  assert '<script>' not in fragment and '<b>' not in fragment
  keys = data_keys(fragment)
  assert keys['caption'] == ['a cat', NASTY.strip()]          # best (lowest perplexity) first
  assert keys['caption_perplexity'] == ['3.25', '12.50']


def test_statistics_fragment_shows_counts_and_escapes_top_values():
  fragment = report.statistics_fragment(synthetic_statistics())
  assert data_keys(fragment)['num_examples/train'] == ['12,345']
  assert data_keys(fragment)['num_examples/eval'] == ['7']
  assert '<b>twice' not in fragment and '&lt;b&gt;twice' in fragment
  assert '250,003' in fragment             # the mean of image_id, with separators


def test_schema_fragment_lists_features_and_domains():
  schema = schema_pb2.Schema()
  schema.feature.add(name='caption', type=schema_pb2.BYTES).presence.min_fraction = 1.0
  optional = schema.feature.add(name='license', type=schema_pb2.BYTES, domain='license')
  optional.presence.min_fraction = 0.5
  schema.string_domain.add(name='license', value=['CC <BY>', 'CC0'])
  fragment = report.schema_fragment(schema)
  assert 'required' in fragment and 'optional (min fraction 0.5)' in fragment
  assert '&lt;BY&gt;' in fragment and '<BY>' not in fragment


def test_anomalies_fragment_says_none_or_lists_them():
  assert data_keys(report.anomalies_fragment({'train': [], 'eval': []})) == {
      'anomalies/train': ['none'], 'anomalies/eval': ['none']}
  found = report.anomalies_fragment({'train': [], 'eval': ['caption: <missing> values']})
  assert data_keys(found)['anomalies/eval'] == ['1'] and '&lt;missing&gt;' in found


def test_vocabulary_fragment_size_and_top_tokens():
  tokens = ['a', 'the', '<unk>'] + [f'w{i}' for i in range(100)]
  fragment = report.vocabulary_fragment(tokens, {'a': 30, 'the': 10}, top_n=5)
  assert data_keys(fragment)['vocab_size'] == ['103']
  assert fragment.count('<li>') == 5 and 'w2' not in fragment and '&lt;unk&gt;' in fragment
  assert '75.0%' in fragment                 # 'a' is 30 of the 40 counted tokens


def test_length_histogram_caps_the_last_bin():
  assert report.length_histogram([0, 2, 2, 5, 40], cap=4) == [1, 0, 2, 0, 2]


def bars(svg):
  root = ET.fromstring(svg)   # well-formed XML, or this raises
  return [r for r in root.iter('{http://www.w3.org/2000/svg}rect')]


def test_histogram_svg_has_one_bar_per_bin_and_split_scaled_to_the_values():
  svg = report.svg_histogram(['1', '2', '3'], {'train': [10.0, 40.0, 20.0], 'eval': [5.0, 0.0, 35.0]},
                             title='t <&>', x_label='x', y_label='y')
  heights = [float(r.get('height')) for r in bars(svg)]
  assert len(heights) == 6
  train, evals = heights[0::2], heights[1::2]
  assert train[1] == max(heights) and evals[1] == 0
  assert train[0] / train[1] == pytest.approx(10 / 40, abs=0.01)
  assert {r.get('fill') for r in bars(svg)} == {report.COLOURS['train'], report.COLOURS['eval']}


def test_lengths_fragment_tints_what_the_model_truncates():
  fragment = report.lengths_fragment({'train': [3, 4, 4, 9, 50], 'eval': [4, 5]}, max_tokens=4, cap=10)
  shade = [r for r in bars(fragment[:fragment.index('</svg>') + 6])
           if r.get('fill') == report.COLOURS['truncated']]
  assert len(shade) == 1
  assert '2 (40.0%)' in fragment             # 9 and 50 tokens: longer than 4


def test_nice_ticks_cover_the_range_in_round_steps():
  for low, high in ((0, 7), (3.6, 5.3), (0, 202.4), (0.01, 0.013), (5, 5)):
    ticks = report.nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(mantissa == pytest.approx(m) for m in (1, 2, 5, 10)), (low, high, ticks)
    assert all(b - a == pytest.approx(step) for a, b in zip(ticks, ticks[1:]))


def test_training_and_perplexity_fragments_show_the_metrics():
  metrics = synthetic_metrics()
  training = report.training_fragment(metrics)
  assert len(ET.fromstring(training[:training.index('</svg>') + 6]).findall(
      '{http://www.w3.org/2000/svg}polyline')) == 2
  keys = data_keys(report.perplexity_fragment(metrics))
  assert keys['eval_perplexity'] == ['24.06']
  assert keys['baseline/kneser_ney_trigram'] == ['37.95']
  assert keys['baseline/unigram_add_one'] == ['202.44']


def test_the_model_is_named_after_the_kneser_ney_model_it_mixes_in():
  from pipeline.report import fragments  # pylint: disable=g-import-not-at-top
  named = lambda **hp: fragments.model_name({'hyperparameters': hp})
  assert named(kneser_ney_weight=0.18, kneser_ney_order=4) == 'GRU + Kneser-Ney 4-gram (exported)'
  assert named(kneser_ney_weight=0.15) == 'GRU + Kneser-Ney trigram (exported)'  # older runs
  assert named(kneser_ney_weight=0.0, kneser_ney_order=4) == 'GRU model (exported)'


def test_missing_artifact_names_the_component_and_why():
  runs = [metadata.ComponentRun('Transform', 'COMPLETE', 1.0, 5),
          metadata.ComponentRun('Trainer', 'FAILED', 2.0, 6)]
  run = report.Run('r1', runs, {'Transform': {'transform_graph': '/x'}})
  assert run.output('Transform', 'transform_graph') == '/x'
  with pytest.raises(report.MissingArtifact, match=r"Trainer's 'model' artifact \(Trainer is FAILED in run r1\)"):
    run.output('Trainer', 'model')
  with pytest.raises(report.MissingArtifact, match='SchemaGen did not run in run r1'):
    run.output('SchemaGen', 'schema')


def test_unfinished_run_shows_what_exists_and_names_what_is_missing(tmp_path):
  stats_dir = tmp_path / 'statistics' / 'Split-train'
  stats_dir.mkdir(parents=True)
  stats = statistics_pb2.DatasetFeatureStatisticsList(datasets=[synthetic_statistics()['train']])
  (stats_dir / 'FeatureStats.pb').write_bytes(stats.SerializeToString())
  runs = [metadata.ComponentRun(c, 'COMPLETE', 1.0, i) for i, c in enumerate(['CsvExampleGen', 'StatisticsGen'])]
  runs.append(metadata.ComponentRun('SchemaGen', 'FAILED', 1.0, 3))
  run = report.Run('r7', runs, {'StatisticsGen': {'statistics': str(tmp_path / 'statistics')}})
  built = report.report_of(run, str(tmp_path))
  assert data_keys(built.html)['num_examples/train'] == ['12,345', '12,345']   # card and table
  assert "SchemaGen's 'schema' artifact (SchemaGen is FAILED in run r7)" in built.missing
  assert "Trainer's 'model' artifact (Trainer did not run in run r7)" in built.missing
  assert "CsvExampleGen's 'examples' artifact (CsvExampleGen is COMPLETE in run r7)" in built.missing
  assert "Evaluator's 'evaluation' artifact (Evaluator did not run in run r7)" in built.missing
  # schema, anomalies, vocab, model, examples (also the input report's source), evaluation
  assert len(built.missing) == len(set(built.missing)) == 6
  assert built.html.count('class="missing">Not available') == 9


def test_whole_page_is_self_contained():
  schema = schema_pb2.Schema()
  schema.feature.add(name='url', type=schema_pb2.BYTES)
  metrics = synthetic_metrics()
  document = report.page('t', [
      report.header_fragment('run <1>', '/root', [('eval perplexity', 'eval_perplexity', '24.06')]),
      report.statistics_fragment(synthetic_statistics()), report.schema_fragment(schema),
      report.anomalies_fragment({'train': ['url: http://example.com/x.jpg unexpected']}),
      report.vocabulary_fragment(['http://a.b/c'], None),
      report.lengths_fragment({'train': [3, 4]}, 4), report.training_fragment(metrics),
      report.perplexity_fragment(metrics), report.captions_fragment([(1, NASTY, 2.0, -1.0)]),
      report.sources_fragment({'Trainer': {'model': 'gs://bucket/model'}}),
      report.missing_fragment('Trainer\'s "model"')])
  assert external_references(document) == []
  assert '<script>' not in document


def test_reference_checker_catches_fetches():
  """The checker above must be able to fail."""
  bad = ('<link rel=stylesheet href="https://cdn.example/x.css"><img src="http://x/y.png">'
         '<style>@import "x.css";</style><div style="background:url(http://x/z)"></div>')
  assert len(external_references(bad)) == 5


# ------------------------------------------------------------------ slow: a real run in Chromium
def chromium_or_skip() -> str:
  if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f'{CHROMIUM} is missing: `make test` installs Debian\'s chromium through '
                'tools/test-deps.sh (needs root or passwordless sudo and apt)')
  return CHROMIUM


def render(page_path: str, out_dir) -> dict:
  """Loads a file in headless Chromium with no way out to the network.

  Every host name resolves to nothing (--host-resolver-rules), and a net log
  records each URL request the browser starts. Returns the DOM after
  rendering, the screenshot path and the URLs the page itself requested.
  """
  netlog = os.path.join(out_dir, 'net.json')
  screenshot = os.path.join(out_dir, 'page.png')
  result = subprocess.run(
      [chromium_or_skip(), '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
       f'--user-data-dir={os.path.join(out_dir, "profile")}', '--no-first-run',
       '--disable-background-networking', '--disable-component-update', '--disable-sync',
       '--disable-extensions', '--host-resolver-rules=MAP * ~NOTFOUND',
       f'--log-net-log={netlog}', '--net-log-capture-mode=Default',
       '--window-size=1200,6000', f'--screenshot={screenshot}', '--dump-dom',
       'file://' + os.path.abspath(page_path)],
      capture_output=True, text=True, timeout=180)
  assert result.returncode == 0, result.stderr[-2000:]
  return {'dom': result.stdout, 'screenshot': screenshot, 'requests': page_requests(netlog)}


def page_requests(netlog_path: str) -> list:
  """URLs of the URL requests a document started, from a Chromium net log.

  Chromium's own background requests (component updates, time sync) have no
  initiating origin ('not an origin') and a network isolation key of their own
  site; a request from the page has the page's origin ('null' for file://) as
  initiator and file:// in its isolation key. The file:// page itself is not a
  network request at all.
  """
  with open(netlog_path) as f:
    text = f.read()
  try:
    log = json.loads(text)
  except ValueError:                 # a log cut off at exit lacks its closing brackets
    log = json.loads(text.rstrip().rstrip(',') + ']}')
  event_types = {v: k for k, v in log['constants']['logEventTypes'].items()}
  found = []
  for event in log['events']:
    params = event.get('params') or {}
    if event_types[event['type']] == 'URL_REQUEST_START_JOB' and 'url' in params:
      if (params.get('initiator') != 'not an origin'
          or 'file://' in params.get('network_isolation_key', '')):
        found.append(params['url'])
  return found


@pytest.mark.slow
def test_netlog_check_sees_a_page_that_fetches(tmp_path):
  """The no-request check below must be able to fail: a page with one remote
  image is caught, and Chromium's own background traffic is not blamed on it."""
  page = tmp_path / 'fetches.html'
  page.write_text('<!DOCTYPE html><p>x</p><img src="http://report-test.invalid/pixel.png">')
  assert render(str(page), str(tmp_path))['requests'] == ['http://report-test.invalid/pixel.png']


@pytest.fixture(scope='module')
def run_report(pipeline_run, tmp_path_factory):
  """The report of the shared run, written by the command line entry point."""
  out = tmp_path_factory.mktemp('report')
  path = str(out / 'report.html')
  assert report_tool.main(['--pipeline-root', pipeline_run.pipeline_root, '--output', path]) == 0
  return path


@pytest.mark.slow
def test_local_runner_writes_the_report_and_names_it(pipeline_run):
  path = os.path.join(os.path.dirname(pipeline_run.metadata_path), 'report.html')
  for result in (pipeline_run.first, pipeline_run.second):
    assert f'report:        {path}' in result.stdout.splitlines()
  with open(path, encoding='utf-8') as f:
    assert 'data-key="eval_perplexity"' in f.read()


def independent_numbers(pipeline_run) -> dict:
  """The run's key numbers, read without pipeline.report."""
  import tensorflow_data_validation as tfdv  # pylint: disable=g-import-not-at-top
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import SPLIT_BUCKETS  # pylint: disable=g-import-not-at-top
  store = metadata.open_store(pipeline_run.metadata_path)
  stats_uri = metadata.latest_artifact_uri(store, 'ExampleStatistics')
  numbers = {f'num_examples/{split}': tfdv.load_stats_binary(
      os.path.join(stats_uri, f'Split-{split}', 'FeatureStats.pb')).datasets[0].num_examples
             for split in SPLIT_BUCKETS}
  numbers['vocab_size'] = tft.TFTransformOutput(
      metadata.latest_artifact_uri(store, 'TransformGraph')).vocabulary_size_by_name(constants.VOCAB_NAME)
  with open(os.path.join(metadata.latest_model_uri(store), 'metrics.json')) as f:
    metrics = json.load(f)
  numbers['eval_perplexity'] = metrics['eval_perplexity']
  for key, value in metrics['baselines'].items():
    numbers[f'baseline/{key}'] = value
  numbers['run_id'] = metadata.run_ids(store)[-1]
  numbers['model_dir'] = os.path.join(metadata.latest_model_uri(store), 'Format-Serving')
  return numbers


@pytest.mark.slow
def test_report_renders_offline_with_the_runs_numbers(pipeline_run, run_report, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from pipeline.pipeline import SPLIT_BUCKETS  # pylint: disable=g-import-not-at-top
  from tests.test_e2e import csv_rows, read_examples  # pylint: disable=g-import-not-at-top

  with open(run_report, encoding='utf-8') as f:
    assert external_references(f.read()) == []
  rendered = render(run_report, str(tmp_path))
  assert rendered['requests'] == []

  # The DOM Chromium built holds the run's numbers.
  shown = data_keys(rendered['dom'])
  expected = independent_numbers(pipeline_run)
  assert shown['run_id'] == [expected['run_id']]
  for split in SPLIT_BUCKETS:
    key = f'num_examples/{split}'
    assert {int(v.replace(',', '')) for v in shown[key]} == {expected[key]}
  assert sum(expected[f'num_examples/{s}'] for s in SPLIT_BUCKETS) == len(csv_rows(pipeline_run.data_root))
  assert {int(v.replace(',', '')) for v in shown['vocab_size']} == {expected['vocab_size']}
  for key in ['eval_perplexity'] + [k for k in expected if k.startswith('baseline/')]:
    assert len(shown[key]) >= 2, key      # the card at the top and the table
    for text in shown[key]:
      assert float(text) == pytest.approx(expected[key], abs=0.005), key
  assert shown['anomalies/train'] == shown['anomalies/eval'] == ['none']
  assert shown['input/rows_read'] == shown['input/examples'] == [f'{len(csv_rows(pipeline_run.data_root)):,}']
  assert shown['input/rejected'] == ['0'] and shown['input/repairs'] == ['1']  # the headerless file

  # The eval captions are eval captions, shown with the model's own scores.
  store = metadata.open_store(pipeline_run.metadata_path)
  examples_uri = metadata.run_outputs(store)['CsvExampleGen']['examples']
  # (DataKeys trims whitespace; a caption in the data may end in a space.)
  raw = {c.strip(): c for c in (e.features.feature['caption'].bytes_list.value[0].decode()
                                for e in read_examples(examples_uri, 'eval'))}
  captions, perplexities = shown['caption'], [float(p) for p in shown['caption_perplexity']]
  assert len(captions) == report.REPORT_CAPTIONS and set(captions) <= set(raw)
  assert perplexities == sorted(perplexities)
  scorer = tf.saved_model.load(expected['model_dir']).signatures['score_captions']
  scores = scorer(captions=tf.constant([raw[c] for c in captions]))['perplexity'].numpy()
  assert perplexities == pytest.approx(scores.tolist(), abs=0.005)

  # The screenshot is a rendered page: many colours, and every chart colour
  # filling bars (the SVG charts drew), not a blank or an error page.
  image = Image.open(rendered['screenshot']).convert('RGB')
  colours = {f'#{r:02x}{g:02x}{b:02x}': n for n, (r, g, b) in image.getcolors(image.width * image.height)}
  background = max(colours.values())
  assert len(colours) > 50
  assert background < 0.97 * image.width * image.height
  for name in ('train', 'eval', 'kneser_ney_trigram', 'unigram_add_one'):
    assert colours.get(report.COLOURS[name], 0) > 300, name


@pytest.mark.slow
def test_report_has_the_evaluation_decision_and_the_sliced_perplexity(pipeline_run, run_report):
  """The sample's model is not blessed: the report says so, names the threshold
  and shows TFMA's perplexity, which equals the Trainer's, and every slice."""
  with open(run_report, encoding='utf-8') as f:
    keys = data_keys(f.read())
  store = metadata.open_store(pipeline_run.metadata_path)
  with open(os.path.join(metadata.latest_model_uri(store), 'metrics.json')) as f:
    trained = json.load(f)['eval_perplexity']
  (blessing,), (pushed,), (perplexity,) = keys['blessing'], keys['pushed'], keys['tfma/perplexity']
  assert blessing.startswith('not blessed: perplexity_ratio_to_kneser_ney_trigram ')
  assert blessing.endswith('(threshold: <= 1)')
  assert pushed == 'nothing'
  assert float(perplexity) == pytest.approx(trained, abs=0.006)
  slices = {k for k in keys if k.startswith('tfma/') and '=' in k}
  assert {'tfma/length_bucket=<=8', 'tfma/length_bucket=9-12', 'tfma/length_bucket=>=13'} <= slices
  assert any(k.startswith('tfma/license=') for k in slices)
