"""Reading one run's data and assembling its report page.

The run comes from ML Metadata (the artifacts of that run's executions, not
whatever happens to lie on disk); the artifacts are read through
`pipeline.artifacts.files`. If the run is unfinished (e.g. no model yet) the
page still shows what exists, and each section whose artifact is missing
names it and why; `Report.missing` lists them.
"""

import collections
import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from modules import constants
from pipeline import settings
from pipeline.artifacts import files, metadata
from pipeline.artifacts.files import MissingArtifact
from pipeline.artifacts.metadata import Run
from pipeline.report.charts import esc, fmt_int
from pipeline.report.fragments import (BASELINE_NAMES, anomalies_fragment, captions_fragment,
                                       components_fragment, evaluation_fragment, header_fragment,
                                       input_fragment,
                                       lengths_fragment, missing_fragment, page,
                                       perplexity_fragment, schema_fragment, section,
                                       sources_fragment, statistics_fragment, training_fragment,
                                       vocabulary_fragment)

REPORT_CAPTIONS = 8          # eval captions scored by the exported model


# ------------------------------------------------------------------ loading
def split_names() -> List[str]:
  """The splits in the order the pipeline names them (train, then eval).
  Imported when needed: pipeline.pipeline loads TFX's components and TFDV."""
  from pipeline.pipeline import SPLIT_BUCKETS  # pylint: disable=g-import-not-at-top
  return list(SPLIT_BUCKETS)


def in_split_order(by_split: Dict[str, Any]) -> Dict[str, Any]:
  """`by_split` with the pipeline's splits first, in its order (files.split_dirs
  sorts by name, which puts eval first), then any other split by name."""
  names = split_names()
  order = lambda split: (names.index(split) if split in names else len(names), split)  # noqa: E731
  return dict(sorted(by_split.items(), key=lambda kv: order(kv[0])))


def transform_max_tokens(run: Run) -> int:
  """MAX_TOKENS as this run's Transform used it (its recorded custom_config;
  the current environment may say otherwise), else the default."""
  return run.custom_config('Transform').get('max_tokens', constants.MAX_TOKENS)


def expected_components(run: Run) -> List[str]:
  """The pipeline's nodes as its ML Metadata recorded them (the run's own
  components when there is no store)."""
  if run.store is not None:
    return metadata.pipeline_nodes(run.store)
  return [r.component for r in run.components]


def caption_source(run: Run) -> str:
  """The ExampleGen whose captions the model saw: with images on, ImageExampleGen's."""
  return 'ImageExampleGen' if run.has('ImageExampleGen', 'examples') else 'CsvExampleGen'


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


def score_sample(run: Run, model_uri: Any, captions: Any) -> List[Tuple[int, str, float, float]]:
  """A few eval captions with the exported model's scores: (id, caption,
  perplexity, log-likelihood). Needs the Trainer's model and the examples."""
  for value in (model_uri, captions):
    if isinstance(value, MissingArtifact):
      raise value
  eval_split = split_names()[-1]
  if eval_split not in captions:
    raise MissingArtifact(f"examples: no Split-{eval_split} in {run.output('CsvExampleGen', 'examples')}")
  sample = sample_evenly(captions[eval_split], REPORT_CAPTIONS)
  scores = files.score_captions(files.serving_dir(model_uri), [c for _, c in sample])
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


def default_metadata_file(pipeline_root: str) -> str:
  """A local pipeline root's ML Metadata (the settings' default layout)."""
  return os.path.join(pipeline_root, 'metadata.db')


def build_report(pipeline_root: str, run_id: Optional[str] = None, *,
                 metadata_file: Optional[str] = None) -> Report:
  """The report of one run (default: the latest) of a pipeline root whose ML
  Metadata is at `metadata_file` (default: <pipeline root>/metadata.db)."""
  sqlite_path = metadata_file or default_metadata_file(pipeline_root)
  return report_of(metadata.load_run(sqlite_path, run_id), pipeline_root)


def report_of(run: Run, pipeline_root: str) -> Report:
  """The page for a run whose artifacts may be partly missing: each section
  renders from its own artifact or says which one it lacks and why."""
  missing: List[str] = []
  stats = _attempt(missing, lambda: in_split_order(
      files.statistics(run.output('StatisticsGen', 'statistics'))))
  schema = _attempt(missing, lambda: files.schema(run.output('SchemaGen', 'schema')))
  found = _attempt(missing, lambda: in_split_order(
      files.anomalies(run.output('ExampleValidator', 'anomalies'))))
  vocab = _attempt(missing, lambda: files.vocabulary(run.output('Transform', 'transform_graph')))
  model_uri = _attempt(missing, lambda: run.output('Trainer', 'model'))
  metrics = (model_uri if isinstance(model_uri, MissingArtifact)
             else _attempt(missing, lambda: files.metrics(model_uri)))
  captions = _attempt(missing, lambda: in_split_order(
      files.captions(run.output(caption_source(run), 'examples'))))
  input_report = _attempt(missing, lambda: files.input_report(run.output('CsvExampleGen',
                                                                         'examples')))

  lengths, counts = {}, None
  if not isinstance(captions, MissingArtifact):
    for split, rows in captions.items():
      lengths[split], split_counts = token_lengths_and_counts(
          [c for _, c in rows], count=(split == 'train'))
      counts = split_counts if split == 'train' else counts

  scored = _attempt(missing, lambda: score_sample(run, model_uri, captions))
  evaluated = _attempt(missing, lambda: files.evaluation(run.output('Evaluator', 'evaluation'),
                                                         run.output('Evaluator', 'blessing')))
  pushed = run.pushed_destination()

  def ok(value):
    return not isinstance(value, MissingArtifact)

  def body(value, render):
    return render(value) if ok(value) else missing_fragment(str(value))

  cards = []
  for split in split_names():
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
  components = components_fragment(run.components, expected_components(run))
  fragments = [
      header_fragment(run.run_id, pipeline_root, cards),
      ('<div class="missing"><b>Incomplete run:</b><ul>'
       + ''.join(f'<li>{esc(m)}</li>' for m in missing) + '</ul></div>') if missing else '',
      section('Components', components, 'components'),
      section('Input checks (ExampleGen)', body(input_report, input_fragment), 'input'),
      section('Data statistics per split', body(stats, statistics_fragment), 'statistics'),
      section('Schema (inferred by SchemaGen)', body(schema, schema_fragment), 'schema'),
      section('Anomalies (ExampleValidator)', body(found, anomalies_fragment), 'anomalies'),
      section('Vocabulary', body(vocab, lambda v: vocabulary_fragment(v, counts)), 'vocabulary'),
      section('Caption length', body(lengths_value, lambda v: lengths_fragment(v, max_tokens)),
              'lengths'),
      section('Training', body(metrics, training_fragment), 'training'),
      section('Perplexity against baselines', body(metrics, perplexity_fragment), 'perplexity'),
      section('Evaluation (Evaluator, TFMA)',
              body(evaluated, lambda e: evaluation_fragment(e, pushed)), 'evaluation'),
      section('Eval captions scored by the model', body(scored, captions_fragment), 'captions'),
      section('Sources', sources_fragment(run.outputs), 'sources'),
  ]
  return Report(page(f'{settings.PIPELINE_NAME} run {run.run_id}', fragments), missing)


def write_report(pipeline_root: str, output: Optional[str] = None,
                 run_id: Optional[str] = None, *,
                 metadata_file: Optional[str] = None) -> Tuple[str, List[str]]:
  """Builds and writes the report; returns its path and what it lacks.

  `metadata_file` defaults to <pipeline root>/metadata.db and `output` to
  settings.REPORT_FILE next to it.
  """
  metadata_file = metadata_file or default_metadata_file(pipeline_root)
  report = build_report(pipeline_root, run_id, metadata_file=metadata_file)
  output = output or os.path.join(os.path.dirname(metadata_file), settings.REPORT_FILE)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, 'w', encoding='utf-8') as f:
    f.write(report.html)
  return output, report.missing
