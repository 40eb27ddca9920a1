"""How each artifact the pipeline writes is laid out, and reading it back.

The one module that knows file names inside artifacts: TFX's split
directories (`Split-<name>`), gzipped TFRecord examples, StatisticsGen's
FeatureStats.pb, SchemaGen's schema.pbtxt, ExampleValidator's SchemaDiff.pb,
Transform's vocabulary, the Trainer's serving directory and metrics.json,
Evaluator's metrics and validation (TFMA's files) and blessing, the serving
layout Pusher writes, ExampleGen's input report and ImageExampleGen's dead
letter and summary.
Everything that reads or writes one of these imports the name from here.

Local paths and gs:// alike (TensorFlow's file system), except where noted.
A missing file raises MissingArtifact naming the file and what it is.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from modules import constants, features

SPLIT_PREFIX = 'Split-'                   # TFX: one directory per split
SERVING_DIR = 'Format-Serving'            # TFX: the Trainer's exported model
METRICS_FILE = constants.METRICS_FILE     # the Trainer's metrics, next to SERVING_DIR
INPUT_REPORT_FILE = 'input_report.json'   # ExampleGen's counts and problems
DEAD_LETTER_FILE = 'dead_letter.csv'      # ImageExampleGen: a row per caption whose image failed
IMAGE_SUMMARY_FILE = 'summary.json'       # ImageExampleGen: the counts, next to the dead letter
REJECTED, REPAIRED = 'rejected', 'repaired'   # what happened to a row with a problem


class MissingArtifact(FileNotFoundError):
  """An artifact or file is not there; the message names it."""


def _gfile():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def require_file(path: str, what: str) -> str:
  if not _gfile().exists(path):
    raise MissingArtifact(f'{what}: {path} does not exist')
  return path


def _read_json(path: str, what: str) -> Dict[str, Any]:
  with _gfile().GFile(require_file(path, what)) as f:
    return json.load(f)


# ------------------------------------------------------------------ splits and examples
def split_dir(uri: str, split: str) -> str:
  return os.path.join(uri, SPLIT_PREFIX + split)


def split_dirs(uri: str) -> Dict[str, str]:
  """{split name: directory} of an artifact with splits, sorted by name."""
  found = {}
  for path in sorted(_gfile().glob(os.path.join(uri, SPLIT_PREFIX + '*'))):
    found[os.path.basename(path.rstrip('/'))[len(SPLIT_PREFIX):]] = path
  return found


def split_files(uri: str, split: str) -> List[str]:
  """The data files of one split (examples: gzipped TFRecords)."""
  return sorted(_gfile().glob(os.path.join(split_dir(uri, split), '*')))


def read_records(uri: str, split: str) -> Iterator[bytes]:
  """Serialized records of one split of an Examples artifact."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  files = split_files(uri, split)
  yield from tf.data.TFRecordDataset(files, compression_type='GZIP').as_numpy_iterator()


def captions(examples_uri: str) -> Dict[str, List[Tuple[int, str]]]:
  """(caption id, caption) of every example, per split of an Examples artifact."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = {features.CAPTION_KEY: tf.io.VarLenFeature(tf.string),
          features.CAPTION_ID_KEY: tf.io.VarLenFeature(tf.int64)}
  found = {}
  for split in split_dirs(examples_uri):
    rows = []
    files = split_files(examples_uri, split)
    for batch in tf.data.TFRecordDataset(files, compression_type='GZIP').batch(4096):
      parsed = tf.io.parse_example(batch, spec)
      texts = tf.sparse.to_dense(parsed[features.CAPTION_KEY], default_value=b'')
      ids = tf.sparse.to_dense(parsed[features.CAPTION_ID_KEY], default_value=-1)
      for cid, caption in zip(ids.numpy().tolist(), texts.numpy().tolist()):
        rows.append((cid[0] if cid else -1, caption[0].decode('utf-8') if caption else ''))
    found[split] = rows
  if not found:
    raise MissingArtifact(f'examples: no {SPLIT_PREFIX}* under {examples_uri}')
  return found


# ------------------------------------------------------------------ data validation
def statistics(uri: str) -> Dict[str, Any]:
  """StatisticsGen's Split-*/FeatureStats.pb -> {split: DatasetFeatureStatistics}."""
  from tensorflow_metadata.proto.v0 import statistics_pb2  # pylint: disable=g-import-not-at-top
  found = {}
  for split, path in split_dirs(uri).items():
    stats_path = os.path.join(path, 'FeatureStats.pb')
    if _gfile().exists(stats_path):
      with _gfile().GFile(stats_path, 'rb') as f:
        found[split] = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read()).datasets[0]
  if not found:
    raise MissingArtifact(f'statistics: no {SPLIT_PREFIX}*/FeatureStats.pb under {uri}')
  return found


def schema(uri: str) -> Any:
  """SchemaGen's schema.pbtxt as a tensorflow_metadata Schema."""
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow_metadata.proto.v0 import schema_pb2  # pylint: disable=g-import-not-at-top
  with _gfile().GFile(require_file(os.path.join(uri, 'schema.pbtxt'), 'schema')) as f:
    return text_format.Parse(f.read(), schema_pb2.Schema())


def anomalies(uri: str) -> Dict[str, List[str]]:
  """ExampleValidator's findings per split: '<feature>: <description>' lines
  (TFX 1.16 writes Split-<name>/SchemaDiff.pb)."""
  from tensorflow_metadata.proto.v0 import anomalies_pb2  # pylint: disable=g-import-not-at-top
  require_file(uri, 'anomalies')
  found = {}
  for split, path in split_dirs(uri).items():
    diff = os.path.join(path, 'SchemaDiff.pb')
    if not _gfile().exists(diff):
      continue
    with _gfile().GFile(diff, 'rb') as f:
      proto = anomalies_pb2.Anomalies.FromString(f.read())
    found[split] = [f'{name}: {info.short_description or info.description}'
                    for name, info in sorted(proto.anomaly_info.items())]
  return found


# ------------------------------------------------------------------ transform and model
def vocabulary_path(transform_graph_uri: str) -> str:
  return os.path.join(transform_graph_uri, 'transform_fn', 'assets', constants.VOCAB_NAME)


def vocabulary(transform_graph_uri: str) -> List[str]:
  """Transform's vocabulary file: one token per line, most frequent first."""
  with _gfile().GFile(require_file(vocabulary_path(transform_graph_uri), 'vocabulary'), 'rb') as f:
    lines = f.read().split(b'\n')
  if lines and lines[-1] == b'':
    lines.pop()
  return [line.decode('utf-8', 'replace') for line in lines]


def serving_dir(model_uri: str) -> str:
  """The exported SavedModel of a Trainer Model artifact."""
  return os.path.join(model_uri, SERVING_DIR)


def metrics(model_uri: str) -> Dict[str, Any]:
  """The Trainer's metrics.json (next to Format-Serving)."""
  return _read_json(os.path.join(model_uri, METRICS_FILE), "the Trainer's metrics")


def score_captions(model_dir: str, texts: Sequence[str]) -> List[Tuple[float, float]]:
  """(perplexity, log-likelihood) per caption from an exported model; needs
  only TensorFlow (the model carries its preprocessing)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  require_file(os.path.join(model_dir, 'saved_model.pb'), 'the exported model')
  scorer = tf.saved_model.load(model_dir).signatures[constants.SCORE_SIGNATURE]
  out = scorer(captions=tf.constant(list(texts)))
  return list(zip(out[constants.PERPLEXITY_OUTPUT].numpy().tolist(),
                  out[constants.LOG_LIKELIHOOD_OUTPUT].numpy().tolist()))


# ------------------------------------------------------------------ Evaluator and Pusher
CANDIDATE, BASELINE = 'candidate', 'baseline'   # TFX's model names when there is a baseline
BLESSED_FILE = 'BLESSED'                        # Evaluator: in the blessing artifact's directory
EVALUATED_FILE = 'evaluated.json'               # Evaluator: what an evaluation was of (its reuse key)


@dataclasses.dataclass
class Failure:
  """One threshold a candidate missed."""
  metric: str
  value: float
  threshold: str        # e.g. '<= 1', 'at most 1% above the baseline'


@dataclasses.dataclass
class Evaluation:
  """What Evaluator found: metrics per slice for the candidate (and the
  baseline model, when there was one) and the validation outcome."""
  slices: Dict[str, Dict[str, float]]            # slice name ('' = all) -> candidate's metrics
  baseline: Dict[str, float]                      # the baseline model's, whole split ({}: none)
  blessed: bool
  failures: List[Failure]
  reused_from: Optional[str] = None   # the candidate was its own baseline: this evaluation reused

  @property
  def overall(self) -> Dict[str, float]:
    return self.slices.get('', {})

  def decision(self) -> str:
    """One line: blessed, or why not (each missed metric, its value and the
    threshold), in the metric names of modules/evaluation.py."""
    ppl = self.overall.get('perplexity', float('nan'))
    if self.blessed:
      if self.reused_from:
        against = '; the latest blessed model itself (its evaluation reused)'
      elif 'perplexity' in self.baseline:
        against = f"; latest blessed model {self.baseline['perplexity']:.2f}"
      else:
        against = '; no earlier blessed model'
      return (f'blessed: perplexity {ppl:.2f}, '
              f"{self.overall.get('perplexity_ratio_to_kneser_ney_trigram', float('nan')):.3f}"
              f' x the Kneser-Ney trigram{against}')
    missed = []
    for failure in self.failures:
      if failure.metric.endswith('(change)'):
        base = self.baseline.get('perplexity', float('nan'))
        missed.append(f'perplexity {ppl:.2f} vs the latest blessed model\'s {base:.2f} '
                      f'({ppl / base - 1:+.1%}; threshold: {failure.threshold})')
      else:
        missed.append(f'{failure.metric} {failure.value:.3f} (threshold: {failure.threshold})')
    return 'not blessed: ' + ('; '.join(missed) or 'no validation result')


def _slice_name(slice_key) -> str:
  parts = []
  for key in slice_key.single_slice_keys:
    value = key.WhichOneof('kind')
    text = getattr(key, value) if value else ''
    parts.append(f'{key.column}={text.decode() if isinstance(text, bytes) else text}')
  return ', '.join(parts)


def _threshold_text(metric_key, threshold) -> str:
  if metric_key.is_diff:
    relative = threshold.change_threshold.relative.value
    return f'at most {relative:.0%} above the latest blessed model'
  bound = threshold.value_threshold
  if bound.HasField('upper_bound'):
    return f'<= {bound.upper_bound.value:g}'
  return f'>= {bound.lower_bound.value:g}'


def evaluation(evaluation_uri: str, blessing_uri: str) -> Evaluation:
  """Reads an Evaluator's output (TFMA's metrics and validations files) and
  its blessing."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  require_file(os.path.join(evaluation_uri, 'eval_config.json'), "the Evaluator's output")
  slices: Dict[str, Dict[str, float]] = {}
  baseline: Dict[str, float] = {}
  for for_slice in tfma.load_metrics(evaluation_uri):
    name = _slice_name(for_slice.slice_key)
    for item in for_slice.metric_keys_and_values:
      key, value = item.key, item.value.double_value.value
      if key.is_diff:
        continue
      if key.model_name == BASELINE:
        if not name:
          baseline[key.name] = value
      else:
        slices.setdefault(name, {})[key.name] = value
  validation = tfma.load_validation_result(evaluation_uri)
  failures = [Failure(f.metric_key.name + (' (change)' if f.metric_key.is_diff else ''),
                      f.metric_value.double_value.value,
                      _threshold_text(f.metric_key, f.metric_threshold))
              for per_slice in validation.metric_validations_per_slice for f in per_slice.failures]
  blessed = _gfile().exists(os.path.join(blessing_uri, BLESSED_FILE))
  record = os.path.join(evaluation_uri, EVALUATED_FILE)
  reused_from = _read_json(record, 'the reuse record').get('reused_from') if _gfile().exists(
      record) else None
  return Evaluation(slices, baseline, blessed, failures, reused_from)


def serving_versions(model_dir: str) -> List[str]:
  """The version directories under a serving model directory, oldest first."""
  if not _gfile().isdir(model_dir):
    return []
  names = [n.rstrip('/') for n in _gfile().listdir(model_dir)]
  return sorted((n for n in names if n.isdigit()), key=int)


# ------------------------------------------------------------------ ExampleGen's input report
@dataclasses.dataclass(frozen=True)
class InputCounts:
  read: int
  written: int
  rejected: int    # rows, however many problems each had
  repairs: int


def input_counts(report: Dict[str, Any]) -> InputCounts:
  """The counts of an input report, for the log, ML Metadata, the run
  summary and the HTML report alike."""
  problems = report.get('problems', [])
  written = sum(report.get('examples', {}).values())
  rejected = len({(p['path'], p['line']) for p in problems if p['action'] == REJECTED})
  repairs = sum(p['action'] == REPAIRED for p in problems)
  return InputCounts(written + rejected, written, rejected, repairs)


def input_report_path(examples_uri: str) -> str:
  return os.path.join(examples_uri, INPUT_REPORT_FILE)


def write_input_report(examples_uri: str, report: Dict[str, Any]) -> None:
  with _gfile().GFile(input_report_path(examples_uri), 'w') as f:
    f.write(json.dumps(report, indent=1))


def input_report(examples_uri: str) -> Dict[str, Any]:
  """The input report of an Examples artifact the checked ExampleGen wrote."""
  return _read_json(input_report_path(examples_uri),
                    'input report (written by the fast ExampleGen executor)')


# ------------------------------------------------------------------ ImageExampleGen's outputs
def dead_letter_path(directory: str) -> str:
  return os.path.join(directory, DEAD_LETTER_FILE)


def image_summary_path(directory: str) -> str:
  return os.path.join(directory, IMAGE_SUMMARY_FILE)


def image_summary(directory: str) -> Dict[str, Any]:
  """summary.json of the image stage: counts, wall time and its summary line."""
  return _read_json(image_summary_path(directory), 'image summary')

