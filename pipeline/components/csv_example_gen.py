"""CsvExampleGen with the input checks: TFX's component and output contract,
a faster executor that also checks every row.

Same output contract as the stock component: gzipped TFRecords of
tf.Examples per split, the same split assignment (TFX's own hash of the
partition feature), the same column typing (TFX's INT -> FLOAT -> STRING
inference, exactly) and the same quoting rules (RFC 4180 double quotes,
quoted newlines). What changes is how: pyarrow parses each file in C++
(pipeline/csv_input), tfx_bsl's record-batch encoder builds the serialized
examples, and every problem is reported with its file, line and column
(input_report.json in the artifact, counts in ML Metadata). Select with
`COCO_EXAMPLEGEN=fast|stock`.

The rejection limit and the token count reach the executor in the
component's `custom_config` (part of its cache key, and in the compiled
Kubeflow/Vertex spec), never from the environment. Anything this executor
does not cover (no output split config, or no partition feature) is handed
to the stock executor unchanged.
"""

import dataclasses
import logging
import os
from typing import Any, Dict, List, Tuple

import apache_beam as beam
import tensorflow as tf
from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components.example_gen import utils
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.example_gen.csv_example_gen import executor as stock
from tfx.components.example_gen.write_split import DEFAULT_FILE_NAME
from tfx.components.util import examples_utils
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.types.artifact import Artifact
from tfx.utils import proto_utils

from modules import constants
from pipeline.artifacts import files
from pipeline.csv_input.encode import encode_file
from pipeline.csv_input.reader import CsvFormatError, Plan, Problem, make_plan, summarise_file

log = logging.getLogger('coco_captions.examplegen')


# custom_config keys, and their defaults for a component built without them.
MAX_REJECTED = 'max_rejected_fraction'   # the run stops when more rows are rejected
MAX_TOKENS = 'max_tokens'                # longer captions are counted (Transform truncates)
DEFAULT_MAX_REJECTED = 0.05
DEFAULT_MAX_TOKENS = constants.MAX_TOKENS


class _WriteFileSplits(beam.DoFn):
  """Parses, checks, encodes and writes one input file's examples straight to
  one gzipped TFRecord file per split; yields its FileCounts, and each
  Problem to the 'problems' output.

  Writing here rather than emitting one Beam element per example is the
  point: per-element Beam overhead (partition, shuffle, sink) costs about
  ten times the parsing and encoding.
  """

  def __init__(self, partition_feature, buckets, split_uris, max_tokens: int):
    self._partition = partition_feature
    self._max_tokens = max_tokens
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
      for block in encode_file(plan.files[index], plan, self._partition, self._buckets,
                               self._max_tokens):
        for problem in block.problems:
          self._problems.inc()
          yield beam.pvalue.TaggedOutput('problems', problem)
        long_count += block.long_captions
        for split, examples in block.examples.items():
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
    yield FileCounts(dict(zip((name for name, _ in self._split_uris), counts)), long_count)


@dataclasses.dataclass(frozen=True)
class FileCounts:
  """Examples written per split, and captions longer than the model reads."""
  examples: Dict[str, int]
  long_captions: int


def input_report(counts: List[FileCounts], problems: List[Problem]) -> Dict[str, Any]:
  """Examples per split and every problem: written next to the splits, read
  back to log, to record in ML Metadata and to enforce the limit."""
  examples: Dict[str, int] = {}
  for file_counts in counts:
    for split, n in file_counts.examples.items():
      examples[split] = examples.get(split, 0) + n
  return {'examples': dict(sorted(examples.items())),
          'long_captions': sum(c.long_captions for c in counts),
          'problems': [dataclasses.asdict(p) for p in sorted(
              problems, key=lambda p: (p.path, p.line, p.column))]}


def write_input_report(counts: List[FileCounts], problems: List[Problem], uri: str) -> None:
  files.write_input_report(uri, input_report(counts, problems))


def log_input_report(report: Dict[str, Any], uri: str, max_tokens: int,
                     limit: int = 20) -> files.InputCounts:
  """One summary line plus one line per problem (up to `limit`)."""
  problems = [Problem(**p) for p in report['problems']]
  counts = files.input_counts(report)
  splits = ', '.join(f'{n} {c:,}' for n, c in report['examples'].items())
  details = files.input_report_path(uri)
  log.info('input: %s rows -> %s examples (%s); %d rows rejected, %d repairs%s',
           f'{counts.read:,}', f'{counts.written:,}', splits, counts.rejected, counts.repairs,
           f'; details: {details}' if problems else '')
  if report.get('long_captions'):
    log.info('  %s captions have more than %d words; Transform keeps their first %d tokens',
             f'{report["long_captions"]:,}', max_tokens, max_tokens)
  for problem in problems[:limit]:
    log.info('  %s', problem)
  if len(problems) > limit:
    log.info('  ... %d more in %s', len(problems) - limit, details)
  return counts


def custom_config_proto(values: Dict[str, Any]) -> example_gen_pb2.CustomConfig:
  """ExampleGen's custom_config is an Any: here a Struct of plain values."""
  packed = any_pb2.Any()
  packed.Pack(json_format.ParseDict(values, struct_pb2.Struct()))
  return example_gen_pb2.CustomConfig(custom_config=packed)


def custom_config_values(exec_properties: Dict[str, Any]) -> Dict[str, Any]:
  """The executor's side of custom_config_proto."""
  raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
  if not raw:
    return {}
  config = example_gen_pb2.CustomConfig()
  proto_utils.json_to_proto(raw, config)
  values = struct_pb2.Struct()
  if not config.custom_config.Unpack(values):
    raise ValueError(f'custom_config holds {config.custom_config.type_url}, not a Struct')
  return json_format.MessageToDict(values)


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
    options = custom_config_values(exec_properties)
    max_rejected = float(options.get(MAX_REJECTED, DEFAULT_MAX_REJECTED))
    max_tokens = int(options.get(MAX_TOKENS, DEFAULT_MAX_TOKENS))
    examples = output_dict[standard_component_specs.EXAMPLES_KEY]
    artifact = artifact_utils.get_single_instance(examples)
    names = utils.generate_output_split_names(input_config, output_config)
    artifact.split_names = artifact_utils.encode_split_names(names)
    split_uris = [(name, artifact_utils.get_split_uri(examples, name)) for name in names]
    for _, uri in split_uris:
      fileio.makedirs(uri)

    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    pattern = os.path.join(input_base, input_config.splits[0].pattern)
    inputs = sorted(f for f in fileio.glob(pattern) if not fileio.isdir(f))
    if not inputs:
      raise CsvFormatError(f'{input_base}: no input files (nothing matches {pattern})')
    buckets = []
    for split in split_config.splits:
      buckets.append((buckets[-1] if buckets else 0) + split.hash_buckets)

    with self._make_beam_pipeline() as pipeline:
      paths = pipeline | 'ListCsvFiles' >> beam.Create(list(enumerate(inputs)))
      plan = (paths
              | 'CheckFilesAndInferTypes' >> beam.MapTuple(summarise_file)
              | 'PlanAcrossFiles' >> beam.combiners.ToList()
              | 'MakePlan' >> beam.Map(make_plan))
      written = (paths
                 | 'Reshard' >> beam.Reshuffle()
                 | 'ParseCheckEncodeWrite' >> beam.ParDo(
                     _WriteFileSplits(split_config.partition_feature_name, buckets, split_uris,
                                      max_tokens),
                     plan=beam.pvalue.AsSingleton(plan)).with_outputs('problems', main='counts'))
      _ = (written.counts
           | 'CollectCounts' >> beam.combiners.ToList()
           | 'WriteInputReport' >> beam.Map(
               write_input_report, problems=beam.pvalue.AsList(written.problems),
               uri=artifact.uri))
    for _, uri in split_uris:  # a split no row hashed into still gets a (empty) file
      if not fileio.glob(os.path.join(uri, '*')):
        tf.io.TFRecordWriter(os.path.join(uri, f'{DEFAULT_FILE_NAME}-00000-of-00001.gz'),
                             options='GZIP').close()
    report = files.input_report(artifact.uri)
    counts = log_input_report(report, artifact.uri, max_tokens)
    read, rejected = counts.read, counts.rejected
    for name, value in (('rows_read', read), ('rows_rejected', rejected),
                        ('repairs', counts.repairs)):
      artifact.set_int_custom_property(name, value)
    if rejected > max_rejected * read:
      first = [str(Problem(**p)) for p in report['problems'] if p['action'] == files.REJECTED]
      raise CsvFormatError(
          f'{rejected} of {read} rows rejected, over the limit of {max_rejected:.0%} '
          f'(COCO_MAX_REJECTED); first: {first[0]}'
          + (f' (all in {files.input_report_path(artifact.uri)})' if len(first) > 1 else ''))
    if payload:
      for artifact in examples:
        examples_utils.set_payload_format(artifact, payload)


class CsvExampleGen(FileBasedExampleGen):
  """TFX's CsvExampleGen (same spec and node id) with the checking executor
  and the two values it needs as custom_config."""

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

  def __init__(self, input_base: str, output_config: example_gen_pb2.Output,
               max_rejected: float = DEFAULT_MAX_REJECTED,
               max_tokens: int = DEFAULT_MAX_TOKENS):
    super().__init__(input_base=input_base, output_config=output_config,
                     custom_config=custom_config_proto({MAX_REJECTED: float(max_rejected),
                                                        MAX_TOKENS: int(max_tokens)}))
