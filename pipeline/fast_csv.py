"""A faster executor behind the stock CsvExampleGen component.

Same component, same output contract: gzipped TFRecords of tf.Examples per
split, the same split assignment (TFX's own hash of the partition feature),
the same column typing (TFX's INT -> FLOAT -> STRING inference, exactly) and
the same quoting rules (RFC 4180 double quotes, quoted newlines). What
changes is how: pyarrow parses each file in C++ and tfx_bsl's record-batch
encoder builds the serialized examples, instead of Python building one proto
cell by cell. Select with `COCO_EXAMPLEGEN=fast|stock` (pipeline/config.py).

Anything this executor does not cover (no output split config, or no
partition feature) is handed to the stock executor unchanged.
"""

import bisect
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv
import tensorflow as tf
from tfx.types.artifact import Artifact
from tfx.components.example_gen import utils
from tfx.components.example_gen.csv_example_gen import executor as stock
from tfx.components.example_gen.write_split import DEFAULT_FILE_NAME
from tfx.components.util import examples_utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils
from tfx_bsl.coders import csv_decoder, example_coder

from pipeline import config, validate

ColumnType = csv_decoder.ColumnType
_ARROW_TYPES = {
    ColumnType.INT: pa.large_list(pa.int64()),
    ColumnType.FLOAT: pa.large_list(pa.float32()),
    ColumnType.STRING: pa.large_list(pa.large_binary()),
}
_BLOCK_BYTES = 16 << 20  # local files stream in blocks of this size
INPUT_REPORT = 'input_report.json'  # counts and problems, in the Examples artifact
LONG_CAPTIONS = -1   # encode_file's "split" marking a count of over-long captions


CsvFormatError = validate.CsvFormatError
Problem = validate.Problem
_ROWS_PER_BATCH = 50_000   # rows per batch when a file is read row by row


class _NeedsScan(Exception):
  """The vectorised checks found something: read this file row by row."""


def read_first_line(path: str) -> bytes:
  with fileio.open(path, 'rb') as f:
    return f.readline()


def file_header(path: str) -> Optional[validate.Header]:
  """The file's columns (validate.parse_header); None for an empty file."""
  return validate.parse_header(path, read_first_line(path))


def _arrow_source(path: str):
  if '://' in path:  # GCS etc.: through TF's filesystems, whole file in memory
    with fileio.open(path, 'rb') as f:
      return pa.BufferReader(f.read())
  return path  # local: pyarrow streams it block by block


def checked_blocks(path: str, header: validate.Header) -> Iterator[pa.RecordBatch]:
  """Record batches of one file, every column as UTF-8 text ('' when empty),
  parsed by pyarrow; raises _NeedsScan at the first sign of a bad row."""
  invalid = []
  def on_invalid_row(row):
    invalid.append(row)
    return 'skip'
  options = dict(
      read_options=pa_csv.ReadOptions(column_names=header.columns,
                                      skip_rows=1 if header.has_header else 0,
                                      block_size=_BLOCK_BYTES, use_threads=False),
      parse_options=pa_csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=True,
                                        invalid_row_handler=on_invalid_row),
      convert_options=pa_csv.ConvertOptions(
          column_types={c: pa.binary() for c in header.columns}, strings_can_be_null=False,
          quoted_strings_can_be_null=False))
  try:
    reader = pa_csv.open_csv(_arrow_source(path), **options)
    for block in reader:
      if invalid:
        raise _NeedsScan()
      text = pa.RecordBatch.from_arrays([c.cast(pa.string()) for c in block.columns],
                                        header.columns)   # raises on bytes that are not UTF-8
      if validate.block_needs_scan(text, header.columns):
        raise _NeedsScan()
      yield text
    if invalid:
      raise _NeedsScan()
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    raise _NeedsScan() from None


def scanned_blocks(path: str, header: validate.Header
                   ) -> Iterator[Tuple[pa.RecordBatch, List[int], List[Problem]]]:
  """The good rows of one file read row by row (validate.scan_rows), in
  batches, with each row's line number and the problems found on the way."""
  with fileio.open(path, 'rb') as f:
    data = f.read()
  rows, lines, problems = [], [], []
  def batch():
    columns = [pa.array(list(c), pa.string()) for c in zip(*rows)] if rows else [
        pa.array([], pa.string()) for _ in header.columns]
    return pa.RecordBatch.from_arrays(columns, header.columns), lines, problems
  for line, fields, found in validate.scan_rows(path, data, header):
    problems.extend(found)
    if fields is not None:
      rows.append(fields)
      lines.append(line)
    if len(rows) >= _ROWS_PER_BATCH:
      yield batch()
      rows, lines, problems = [], [], []
  if rows or problems:
    yield batch()


@dataclasses.dataclass
class FileSummary:
  """What the first pass learnt about one input file."""
  index: int
  path: str
  header: Optional[validate.Header]   # None: empty file
  types: Dict[str, int]
  ids: np.ndarray                      # caption ids of the good rows, in order
  scan: bool                           # read row by row (it has problems)


def caption_ids(block: pa.RecordBatch, columns: Sequence[str], scanned: bool) -> np.ndarray:
  """The caption ids of a block of checked rows. Rows read one by one may
  hold ids like ' 12' or '+5' that Python's int() reads and pyarrow's cast
  does not."""
  ids = block.column(list(columns).index(config.CAPTION_ID_KEY))
  if scanned:
    return np.asarray([int(v) for v in ids.to_pylist()], np.int64)
  return ids.cast(pa.int64()).to_numpy()


def summarise_file(index: int, path: str) -> FileSummary:
  """First pass over one file: header, checks, TFX column types, caption ids."""
  header = file_header(path)
  if header is None:
    return FileSummary(index, path, None, {}, np.zeros(0, np.int64), False)
  def summary(blocks, scanned):
    ids = []
    def collect_ids(blocks):
      for block in blocks:
        ids.append(caption_ids(block, header.columns, scanned))
        yield block
    types = infer_types(collect_ids(blocks), header.columns)
    return FileSummary(index, path, header, types,
                       np.concatenate(ids) if ids else np.zeros(0, np.int64), scanned)
  try:
    return summary(checked_blocks(path, header), False)
  except _NeedsScan:
    return summary((b for b, _, _ in scanned_blocks(path, header)), True)


@dataclasses.dataclass
class Plan:
  """The whole input as the second pass needs it."""
  columns: List[str]
  types: Dict[str, int]
  duplicates: Dict[int, Tuple[int, int]]   # caption id -> (file, position) kept
  files: Dict[int, FileSummary]


def make_plan(summaries: Iterable[FileSummary]) -> Plan:
  """Checks that every file has the same columns, unifies their types and
  finds duplicate caption ids across files (the first occurrence is kept)."""
  summaries = sorted(summaries, key=lambda s: s.index)
  with_rows = [s for s in summaries if s.header is not None]
  if not with_rows:
    raise CsvFormatError(f'every input file is empty: {", ".join(s.path for s in summaries)}')
  first = with_rows[0]
  for other in with_rows[1:]:
    if other.header.columns != first.header.columns:
      raise CsvFormatError(
          f'{other.path}:1: columns {",".join(other.header.columns)} differ from '
          f'{",".join(first.header.columns)} in {first.path}')
  return Plan(columns=first.header.columns,
              types=unify_types(s.types for s in with_rows),
              duplicates=validate.duplicates([s.ids for s in summaries]),
              files={s.index: s for s in summaries})


def _column_kind(values: pa.Array) -> int:
  """Type of one column's distinct non-empty values, as TFX infers it.

  pyarrow's integer cast is the fast path; anything it rejects (whitespace,
  underscores, floats, overflow, text) goes through TFX's own rule per value.
  """
  if len(values) == 0:
    return ColumnType.UNKNOWN
  try:
    values.cast(pa.int64())
    return ColumnType.INT
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    pass
  kind = ColumnType.UNKNOWN
  for value in values.to_pylist():
    kind = max(kind, csv_decoder._InferValueType(value.encode()))  # pylint: disable=protected-access
    if kind == ColumnType.STRING:
      break
  return kind


def infer_types(blocks: Iterable[pa.RecordBatch], columns: Sequence[str]) -> Dict[str, int]:
  """TFX's per-column type inference (csv_decoder._InferValueType), exactly:
  each non-empty value votes INT < FLOAT < STRING, the highest wins."""
  found = {c: ColumnType.UNKNOWN for c in columns}
  for block in blocks:
    for name, column in zip(columns, block.columns):
      if found[name] != ColumnType.STRING:
        distinct = column.unique()
        distinct = distinct.filter(pc.not_equal(distinct, ''))
        found[name] = max(found[name], _column_kind(distinct))
  return found


def unify_types(per_file: Iterable[Dict[str, int]]) -> Dict[str, int]:
  merged: Dict[str, int] = {}
  for types in per_file:
    for name, kind in types.items():
      merged[name] = max(merged.get(name, ColumnType.UNKNOWN), kind)
  return merged


def _typed_column(column: pa.Array, kind: int) -> pa.Array:
  """One text column -> list column of its TFX type; '' -> empty list
  (stock CsvExampleGen writes a typed, empty feature for an empty cell), and
  a never-filled (UNKNOWN) column -> null, i.e. a feature with no kind."""
  if kind == ColumnType.UNKNOWN:
    return pa.nulls(len(column), pa.large_list(pa.large_binary()))
  present = pc.not_equal(column, '')
  offsets = np.concatenate([[0], np.cumsum(present.to_numpy(zero_copy_only=False),
                                           dtype=np.int64)])
  values = column.filter(present)
  if kind == ColumnType.STRING:
    values = values.cast(pa.large_binary())
  else:
    python_type, arrow_type = ((int, pa.int64()) if kind == ColumnType.INT
                               else (float, pa.float64()))
    try:
      values = values.cast(arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. ' 12', '1_000'
      values = pa.array([python_type(v) for v in values.to_pylist()], arrow_type)
    if kind == ColumnType.FLOAT:
      values = values.cast(pa.float32())  # FloatList holds float32, as float() -> proto
  return pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)


def partition_index(value: Any, kind: int, buckets: Sequence[int]) -> int:
  """TFX's split assignment (base_example_gen_executor._PartitionFn)."""
  if kind == ColumnType.INT:
    feature = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))
  else:
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
  key = feature.SerializeToString(deterministic=True)
  return bisect.bisect(buckets, int(hashlib.sha256(key).hexdigest(), 16) % buckets[-1])


def encode_file(summary: FileSummary, plan: Plan, partition_feature: str,
                buckets: Sequence[int]
                ) -> Iterator[Tuple[Optional[int], List[bytes], List[Problem]]]:
  """Second pass over one file -> (split index or None, serialized tf.Examples,
  problems) per block. Rows with problems and later duplicates of a caption
  id are left out, each with its Problem."""
  header = summary.header
  if header is None:
    yield None, [], [Problem(summary.path, 1, '', 'empty file skipped', validate.REPAIRED)]
    return
  yield None, [], list(header.problems)
  kind = plan.types[partition_feature]
  if kind not in (ColumnType.INT, ColumnType.STRING):
    raise CsvFormatError(f'{summary.path}: partition column {partition_feature!r} has no values')
  scan = summary.scan or bool(plan.duplicates and np.isin(
      summary.ids, np.fromiter(plan.duplicates, np.int64)).any())
  blocks = (scanned_blocks(summary.path, header) if scan
            else ((b, None, []) for b in checked_blocks(summary.path, header)))
  id_index = header.columns.index(config.CAPTION_ID_KEY)
  encoder = example_coder.RecordBatchToExamplesEncoder()
  split_of: Dict[str, int] = {}
  position = 0
  for block, lines, problems in blocks:
    problems = list(problems)
    if scan and plan.duplicates:
      keep = []
      for k, value in enumerate(block.column(id_index).to_pylist()):
        kept_at = plan.duplicates.get(int(value))
        keep.append(kept_at is None or kept_at == (summary.index, position + k))
        if not keep[-1]:
          problems.append(Problem(summary.path, lines[k], config.CAPTION_ID_KEY,
                                  f'duplicate caption id {value}; the first occurrence, '
                                  f'in {plan.files[kept_at[0]].path}, is kept'))
      position += block.num_rows
      block = block.filter(pa.array(keep, pa.bool_()))
    yield None, [], problems
    yield LONG_CAPTIONS, long_captions(block.column(header.columns.index(config.CAPTION_KEY))), []
    keys = block.column(header.columns.index(partition_feature)).to_pylist()
    typed = pa.RecordBatch.from_arrays(
        [_typed_column(col, plan.types[name]) for name, col in zip(header.columns, block.columns)],
        header.columns)
    by_split: Dict[int, List[bytes]] = {}
    for key, example in zip(keys, encoder.encode(typed)):
      if key not in split_of:
        split_of[key] = partition_index(key, kind, buckets)
      by_split.setdefault(split_of[key], []).append(example)
    for split, examples in by_split.items():
      yield split, examples, []


def long_captions(captions: pa.Array) -> int:
  """Captions with more words than the model reads (Transform truncates them)."""
  words = pc.add(pc.count_substring_regex(pc.utf8_trim_whitespace(captions), r'\s+'), 1)
  return int(pc.sum(pc.greater(words, config.MAX_TOKENS)).as_py() or 0)


class _WriteFileSplits(beam.DoFn):
  """Parses, checks, encodes and writes one input file's examples straight to
  one gzipped TFRecord file per split; yields (split name, count), and each
  Problem to the 'problems' output.

  Writing here rather than emitting one Beam element per example is the
  point: per-element Beam overhead (partition, shuffle, sink) costs about
  ten times the parsing and encoding.
  """

  def __init__(self, partition_feature, buckets, split_uris):
    self._partition = partition_feature
    self._buckets = list(buckets)
    self._split_uris = list(split_uris)   # [(name, uri)] in split order
    self._rows = beam.metrics.Metrics.counter('coco_captions', 'csv_rows')
    self._problems = beam.metrics.Metrics.counter('coco_captions', 'csv_problems')

  def process(self, indexed_path: Tuple[int, str], plan: Plan):
    index, _ = indexed_path
    writers = {}
    counts = [0] * len(self._split_uris)
    long_count = 0
    try:
      for split, examples, problems in encode_file(plan.files[index], plan, self._partition,
                                                   self._buckets):
        for problem in problems:
          self._problems.inc()
          yield beam.pvalue.TaggedOutput('problems', problem)
        if split is None:
          continue
        if split == LONG_CAPTIONS:
          long_count += examples  # a count, for this marker
          continue
        if split not in writers:
          uri = self._split_uris[split][1]
          writers[split] = tf.io.TFRecordWriter(
              os.path.join(uri, f'{DEFAULT_FILE_NAME}-{index:05d}-of-{len(plan.files):05d}.gz'),
              options='GZIP')
        for example in examples:
          writers[split].write(example)
        counts[split] += len(examples)
        self._rows.inc(len(examples))
    finally:
      for writer in writers.values():
        writer.close()
    for (name, _), count in zip(self._split_uris, counts):
      yield name, count
    yield LONG_CAPTIONS, long_count


def write_input_report(counts: List[Tuple[str, int]], problems: List[Problem], uri: str) -> None:
  """Examples per split and every problem, next to the splits: the executor
  reads it back to log, to record in ML Metadata and to enforce the limit."""
  counts = dict(counts)
  long_count = counts.pop(LONG_CAPTIONS, 0)
  report = {'examples': dict(sorted(counts.items())), 'long_captions': long_count,
            'problems': [dataclasses.asdict(p) for p in sorted(
                problems, key=lambda p: (p.path, p.line, p.column))]}
  with fileio.open(os.path.join(uri, INPUT_REPORT), 'w') as f:
    f.write(json.dumps(report, indent=1))


def read_input_report(examples_uri: str) -> Optional[dict]:
  """The input report of an Examples artifact this executor wrote, or None."""
  path = os.path.join(examples_uri, INPUT_REPORT)
  if not fileio.exists(path):
    return None
  with fileio.open(path) as f:
    return json.loads(f.read())


def log_input_report(report: dict, uri: str, limit: int = 20) -> validate.InputCounts:
  """One summary line plus one line per problem (up to `limit`)."""
  problems = [Problem(**p) for p in report['problems']]
  counts = validate.input_counts(report)
  splits = ', '.join(f'{n} {c:,}' for n, c in report['examples'].items())
  log = logging.getLogger('coco_captions.examplegen')
  log.info('input: %s rows -> %s examples (%s); %d rows rejected, %d repairs%s',
           f'{counts.read:,}', f'{counts.written:,}', splits, counts.rejected, counts.repairs,
           f'; details: {os.path.join(uri, INPUT_REPORT)}' if problems else '')
  if report.get('long_captions'):
    log.info('  %s captions have more than %d words; Transform keeps their first %d tokens',
             f'{report["long_captions"]:,}', config.MAX_TOKENS, config.MAX_TOKENS)
  for problem in problems[:limit]:
    log.info('  %s', problem)
  if len(problems) > limit:
    log.info('  ... %d more in %s', len(problems) - limit, os.path.join(uri, INPUT_REPORT))
  return counts


class Executor(stock.Executor):
  """CsvExampleGen executor: checks, pyarrow parsing, tfx_bsl encoding, direct writes."""

  def Do(self, input_dict: Dict[str, List[Artifact]],
         output_dict: Dict[str, List[Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                              input_config)
    output_config = example_gen_pb2.Output()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                              output_config)
    split_config = output_config.split_config
    file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY,
                                      example_gen_pb2.FILE_FORMAT_UNSPECIFIED)
    payload = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
    if (len(input_config.splits) != 1 or not split_config.splits
        or not split_config.partition_feature_name
        or file_format not in (example_gen_pb2.FILE_FORMAT_UNSPECIFIED,
                               example_gen_pb2.FORMAT_TFRECORDS_GZIP)
        or payload not in (None, example_gen_pb2.FORMAT_TF_EXAMPLE)):
      return super().Do(input_dict, output_dict, exec_properties)

    self._log_startup(input_dict, output_dict, exec_properties)
    examples = output_dict[standard_component_specs.EXAMPLES_KEY]
    artifact = artifact_utils.get_single_instance(examples)
    names = utils.generate_output_split_names(input_config, output_config)
    artifact.split_names = artifact_utils.encode_split_names(names)
    split_uris = [(name, artifact_utils.get_split_uri(examples, name)) for name in names]
    for _, uri in split_uris:
      fileio.makedirs(uri)

    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    pattern = os.path.join(input_base, input_config.splits[0].pattern)
    files = sorted(f for f in fileio.glob(pattern) if not fileio.isdir(f))
    if not files:
      raise CsvFormatError(f'{input_base}: no input files (nothing matches {pattern})')
    buckets = []
    for split in split_config.splits:
      buckets.append((buckets[-1] if buckets else 0) + split.hash_buckets)

    with self._make_beam_pipeline() as pipeline:
      paths = pipeline | 'ListCsvFiles' >> beam.Create(list(enumerate(files)))
      plan = (paths
              | 'CheckFilesAndInferTypes' >> beam.MapTuple(summarise_file)
              | 'PlanAcrossFiles' >> beam.combiners.ToList()
              | 'MakePlan' >> beam.Map(make_plan))
      written = (paths
                 | 'Reshard' >> beam.Reshuffle()
                 | 'ParseCheckEncodeWrite' >> beam.ParDo(
                     _WriteFileSplits(split_config.partition_feature_name, buckets, split_uris),
                     plan=beam.pvalue.AsSingleton(plan)).with_outputs('problems', main='counts'))
      _ = (written.counts
           | 'CountPerSplit' >> beam.CombinePerKey(sum)
           | 'CollectCounts' >> beam.combiners.ToList()
           | 'WriteInputReport' >> beam.Map(
               write_input_report, problems=beam.pvalue.AsList(written.problems),
               uri=artifact.uri))
    for _, uri in split_uris:  # a split no row hashed into still gets a (empty) file
      if not fileio.glob(os.path.join(uri, '*')):
        tf.io.TFRecordWriter(os.path.join(uri, f'{DEFAULT_FILE_NAME}-00000-of-00001.gz'),
                             options='GZIP').close()
    report = read_input_report(artifact.uri)
    counts = log_input_report(report, artifact.uri)
    read, rejected = counts.read, counts.rejected
    for name, value in (('rows_read', read), ('rows_rejected', rejected),
                        ('repairs', counts.repairs)):
      artifact.set_int_custom_property(name, value)
    limit = config.max_rejected_fraction()
    if rejected > limit * read:
      first = [str(Problem(**p)) for p in report['problems'] if p['action'] == validate.REJECTED]
      raise CsvFormatError(
          f'{rejected} of {read} rows rejected, over the limit of {limit:.0%} '
          f'({config.ENV_PREFIX}MAX_REJECTED); first: {first[0]}'
          + (f' (all in {os.path.join(artifact.uri, INPUT_REPORT)})' if len(first) > 1 else ''))
    if payload:
      for artifact in examples:
        examples_utils.set_payload_format(artifact, payload)
