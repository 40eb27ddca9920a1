"""ImageExampleGen: the image stage (pipeline/images/) as a TFX component.

    CsvExampleGen -> ImageExampleGen -> StatisticsGen, Transform, ...

It runs after CsvExampleGen rather than replacing it, because then
- the caption CSVs are parsed once, by the proven executor (quoted newlines,
  column typing), and their fingerprint decides the cache, as before;
- the train/eval split is CsvExampleGen's hash of image_id, kept split by
  split: the same image lands in the same split with and without images;
- ML Metadata records the lineage caption Examples -> ImageExampleGen ->
  image Examples + the dead letter, instead of paths with timestamps.

Outputs: `examples` (one tf.Example per kept caption: image JPEG, its height
and width, the cleaned caption, image_id, id; per split, as ExampleGen writes
them) and `dead_letter` (dead_letter.csv: one row per caption whose image
failed, with the reason; summary.json: the counts). The counts are also the
dead-letter artifact's custom properties in ML Metadata.

The Beam pipeline gets the pipeline's `beam_pipeline_args` like every Beam
component (DirectRunner locally, DataflowRunner on GCP). The image location's
contents are not part of the cache key (COCO images never change in place);
point the component at another location, or run with COCO_CACHE=0, after
editing images.
"""

import json
import logging
import time
from typing import Any, Dict, List

import apache_beam as beam
import tensorflow as tf
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.proto import example_gen_pb2
from tfx import types
from tfx.types import artifact, artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from modules import constants
from pipeline import settings
from pipeline.artifacts import files
from pipeline.artifacts.types import ImageDeadLetter
from pipeline.images import records, transforms

log = logging.getLogger('coco_captions.images')

CAPTIONS_KEY = 'captions'           # input: CsvExampleGen's examples
EXAMPLES_KEY = 'examples'           # output: the image-caption examples
DEAD_LETTER_KEY = 'dead_letter'
EXAMPLE_FILE_NAME = 'data_tfrecord'   # as ExampleGen names its files


class ImageExampleGenSpec(ComponentSpec):
  PARAMETERS = {
      'image_location': ExecutionParameter(type=str),
      'image_size': ExecutionParameter(type=int),
      'allowed_licenses': ExecutionParameter(type=str),   # JSON list of license names
      'http_timeout': ExecutionParameter(type=float),
      'jpeg_quality': ExecutionParameter(type=int),
  }
  INPUTS = {CAPTIONS_KEY: ChannelParameter(type=standard_artifacts.Examples)}
  OUTPUTS = {
      EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      DEAD_LETTER_KEY: ChannelParameter(type=ImageDeadLetter),
  }


def split_file_prefix(examples: List[artifact.Artifact], split: str) -> str:
  return f'{artifact_utils.get_split_uri(examples, split)}/{EXAMPLE_FILE_NAME}'


class Executor(base_beam_executor.BaseBeamExecutor):
  """Reads each split of the caption examples, runs the image stage on all of
  them in one Beam job, writes the kept examples back split by split."""

  def Do(self, input_dict: Dict[str, List[artifact.Artifact]],
         output_dict: Dict[str, List[artifact.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    captions = artifact_utils.get_single_instance(input_dict[CAPTIONS_KEY])
    splits = artifact_utils.decode_split_names(captions.split_names)
    examples = output_dict[EXAMPLES_KEY]
    output = artifact_utils.get_single_instance(examples)
    output.split_names = artifact_utils.encode_split_names(splits)
    examples_utils.set_payload_format(output, example_gen_pb2.FORMAT_TF_EXAMPLE)
    dead_letter = artifact_utils.get_single_instance(output_dict[DEAD_LETTER_KEY])

    pipeline = self._make_beam_pipeline()
    rows = ([pipeline | f'ReadCaptionRows[{split}]' >> transforms.ReadCaptionExamples(
        artifact_utils.get_split_uri([captions], split), split) for split in splits]
            | 'AllSplits' >> beam.Flatten())
    kept, failed = rows | 'ImagesAndCaptions' >> transforms.ImagesAndCaptions(
        exec_properties['image_location'], int(exec_properties['image_size']),
        json.loads(exec_properties['allowed_licenses']), float(exec_properties['http_timeout']),
        int(exec_properties['jpeg_quality']))
    by_split = kept | 'BySplit' >> beam.Partition(
        lambda record, _: splits.index(record[records.SPLIT_KEY]), len(splits))
    for split, split_records in zip(splits, by_split):
      _ = (split_records
           | f'ToExamples[{split}]' >> beam.Map(_split_example, split)
           | f'WriteExamples[{split}]' >> beam.io.WriteToTFRecord(
               split_file_prefix(examples, split), file_name_suffix='.gz',
               coder=beam.coders.ProtoCoder(tf.train.Example)))
    _ = failed | 'WriteDeadLetter' >> transforms.WriteDeadLetter(dead_letter.uri)

    start = time.time()
    result = pipeline.run()
    result.wait_until_finish()
    counters = records.counters_of(result)
    counts = records.summary_counts(counters)
    transforms.write_summary(dead_letter.uri, counts, time.time() - start)
    for name, value in _flat_counts(counts).items():
      dead_letter.set_int_custom_property(name, value)
    dead_letter.set_string_custom_property('summary', records.summary_line(counts))
    log.info('%s', records.summary_line(counts))
    empty = [s for s in splits if not counters.get(f'kept_captions_split_{s}')]
    if empty:
      raise ValueError(
          f'ImageExampleGen kept no caption in split(s) {empty} '
          f'({records.summary_line(counts)}); '
          f'see {files.dead_letter_path(dead_letter.uri)} and the allowed licenses')


def _split_example(record: Dict[str, Any], split: str) -> tf.train.Example:
  """The record's tf.Example, counted per split (an empty split fails the run)."""
  transforms.counter(f'kept_captions_split_{split}').inc()
  return records.caption_example(record)


def _flat_counts(counts: Dict[str, Any]) -> Dict[str, int]:
  """summary_counts -> flat names for ML Metadata custom properties."""
  flat = {k: v for k, v in counts.items() if isinstance(v, int)}
  for unit in ('captions', 'images'):
    for reason, value in counts[f'failed_{unit}'].items():
      flat[f'failed_{reason}_{unit}'] = value
  return flat


class ImageExampleGen(base_beam_component.BaseBeamComponent):
  """Caption Examples + images -> image-caption Examples and a dead letter."""

  SPEC_CLASS = ImageExampleGenSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

  def __init__(self, captions: types.BaseChannel, image_location: str,
               image_size: int = constants.IMAGE_SIZE,
               allowed_licenses=settings.ALLOWED_LICENSES,
               http_timeout: float = records.HTTP_TIMEOUT_SECONDS,
               jpeg_quality: int = records.JPEG_QUALITY):
    if not image_location:
      variable = settings.variable(settings.ImageSettings, 'location')   # COCO_IMAGE_DIR
      raise ValueError(f'ImageExampleGen needs an image location ({variable}: '
                       'a directory, a gs:// prefix, or "url")')
    super().__init__(spec=ImageExampleGenSpec(
        captions=captions,
        image_location=image_location,
        image_size=int(image_size),
        allowed_licenses=json.dumps(list(allowed_licenses)),
        http_timeout=float(http_timeout),
        jpeg_quality=int(jpeg_quality),
        examples=types.Channel(type=standard_artifacts.Examples),
        dead_letter=types.Channel(type=ImageDeadLetter)))
