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
import hashlib
import logging
import os
from typing import Any, Dict, Iterable, Iterator, List, Sequence, Tuple

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

ColumnType = csv_decoder.ColumnType
_ARROW_TYPES = {
    ColumnType.INT: pa.large_list(pa.int64()),
    ColumnType.FLOAT: pa.large_list(pa.float32()),
    ColumnType.STRING: pa.large_list(pa.large_binary()),
}
_BLOCK_BYTES = 16 << 20  # local files stream in blocks of this size


class CsvFormatError(ValueError):
  """A CSV file the pipeline cannot read, with the file named."""


def read_header(path: str) -> List[str]:
  """Column names of one CSV file (its first record)."""
  with fileio.open(path, 'rb') as f:
    first = f.readline()
  if not first.strip():
    raise CsvFormatError(f'{path}: empty file (no header row)')
  return [c.decode('utf-8') for c in csv_decoder._CSVRecordReader(',').ReadLine(  # pylint: disable=protected-access
      first.decode('utf-8').rstrip('\r\n'))]


def iter_blocks(path: str, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
  """Record batches of one file, every column as UTF-8 text, empty cells ''."""
  options = dict(
      read_options=pa_csv.ReadOptions(column_names=list(columns), skip_rows=1,
                                      block_size=_BLOCK_BYTES),
      parse_options=pa_csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=True),
      convert_options=pa_csv.ConvertOptions(
          column_types={c: pa.string() for c in columns}, strings_can_be_null=False,
          quoted_strings_can_be_null=False))
  if '://' in path:  # GCS etc.: through TF's filesystems, whole file in memory
    with fileio.open(path, 'rb') as f:
      source = pa.BufferReader(f.read())
  else:
    source = path  # local: pyarrow streams it block by block
  try:
    yield from pa_csv.open_csv(source, **options)
  except pa.ArrowInvalid as e:
    raise CsvFormatError(f'{path}: {e}') from None


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


def infer_types(path: str, columns: Sequence[str]) -> Dict[str, int]:
  """TFX's per-column type inference (csv_decoder._InferValueType), exactly:
  each non-empty value votes INT < FLOAT < STRING, the highest wins."""
  found = {c: ColumnType.UNKNOWN for c in columns}
  for block in iter_blocks(path, columns):
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


def encode_file(path: str, columns: Sequence[str], types: Dict[str, int],
                partition_feature: str, buckets: Sequence[int]
                ) -> Iterator[Tuple[int, List[bytes]]]:
  """One CSV file -> (split index, serialized tf.Examples) per block and split."""
  header = read_header(path)
  if header != list(columns):
    raise CsvFormatError(f'{path}: header {header} differs from {list(columns)}')
  kind = types[partition_feature]
  if kind not in (ColumnType.INT, ColumnType.STRING):
    raise CsvFormatError(f'{path}: partition column {partition_feature!r} has no values')
  encoder = example_coder.RecordBatchToExamplesEncoder()
  split_of: Dict[str, int] = {}
  for block in iter_blocks(path, columns):
    keys = block.column(list(columns).index(partition_feature)).to_pylist()
    if '' in keys:
      raise CsvFormatError(f'{path}: a row has no {partition_feature!r} (partition feature)')
    typed = pa.RecordBatch.from_arrays(
        [_typed_column(col, types[name]) for name, col in zip(columns, block.columns)],
        list(columns))
    by_split: Dict[int, List[bytes]] = {}
    for key, example in zip(keys, encoder.encode(typed)):
      if key not in split_of:
        split_of[key] = partition_index(key, kind, buckets)
      by_split.setdefault(split_of[key], []).append(example)
    yield from by_split.items()


class _WriteFileSplits(beam.DoFn):
  """Parses, encodes and writes one input file's examples straight to one
  gzipped TFRecord file per split; yields (split name, count).

  Writing here rather than emitting one Beam element per example is the
  point: per-element Beam overhead (partition, shuffle, sink) costs about
  ten times the parsing and encoding.
  """

  def __init__(self, columns, partition_feature, buckets, split_uris, num_files):
    self._columns = list(columns)
    self._partition = partition_feature
    self._buckets = list(buckets)
    self._split_uris = list(split_uris)   # [(name, uri)] in split order
    self._num_files = num_files
    self._rows = beam.metrics.Metrics.counter('coco_captions', 'csv_rows')

  def process(self, indexed_path: Tuple[int, str], types: Dict[str, int]):
    index, path = indexed_path
    writers = {}
    counts = [0] * len(self._split_uris)
    try:
      for split, examples in encode_file(path, self._columns, types, self._partition,
                                         self._buckets):
        if split not in writers:
          uri = self._split_uris[split][1]
          writers[split] = tf.io.TFRecordWriter(
              os.path.join(uri, f'{DEFAULT_FILE_NAME}-{index:05d}-of-{self._num_files:05d}.gz'),
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


class Executor(stock.Executor):
  """CsvExampleGen executor: pyarrow parsing, tfx_bsl encoding, direct writes."""

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
    names = utils.generate_output_split_names(input_config, output_config)
    artifact_utils.get_single_instance(examples).split_names = (
        artifact_utils.encode_split_names(names))
    split_uris = [(name, artifact_utils.get_split_uri(examples, name)) for name in names]
    for _, uri in split_uris:
      fileio.makedirs(uri)

    pattern = os.path.join(exec_properties[standard_component_specs.INPUT_BASE_KEY],
                           input_config.splits[0].pattern)
    files = sorted(f for f in fileio.glob(pattern) if not fileio.isdir(f))
    if not files:
      raise CsvFormatError(f'no input files match {pattern}')
    columns = read_header(files[0])
    if split_config.partition_feature_name not in columns:
      raise CsvFormatError(f'{files[0]}: no column {split_config.partition_feature_name!r} '
                           f'to split by (columns: {columns})')
    buckets = []
    for split in split_config.splits:
      buckets.append((buckets[-1] if buckets else 0) + split.hash_buckets)

    with self._make_beam_pipeline() as pipeline:
      paths = pipeline | 'ListCsvFiles' >> beam.Create(list(enumerate(files)))
      column_types = (paths
                      | 'InferColumnTypes' >> beam.Map(lambda p: infer_types(p[1], columns))
                      | 'UnifyColumnTypes' >> beam.CombineGlobally(unify_types))
      _ = (paths
           | 'Reshard' >> beam.Reshuffle()
           | 'ParseEncodeWrite' >> beam.ParDo(
               _WriteFileSplits(columns, split_config.partition_feature_name, buckets,
                                split_uris, len(files)),
               types=beam.pvalue.AsSingleton(column_types))
           | 'CountPerSplit' >> beam.CombinePerKey(sum)
           | 'LogCounts' >> beam.Map(lambda kv: logging.info('ExampleGen wrote %d examples '
                                                             'to split %s', kv[1], kv[0])))
    for _, uri in split_uris:  # a split no row hashed into still gets a (empty) file
      if not fileio.glob(os.path.join(uri, '*')):
        tf.io.TFRecordWriter(os.path.join(uri, f'{DEFAULT_FILE_NAME}-00000-of-00001.gz'),
                             options='GZIP').close()
    if payload:
      for artifact in examples:
        examples_utils.set_payload_format(artifact, payload)
