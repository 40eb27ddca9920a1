"""The image stage's Beam steps, and `run`: the stage alone on caption CSVs.

It reads the CSV rows written by `pipeline.tools.ingest` (or, inside the
pipeline, CsvExampleGen's examples: see pipeline/components/image_example_gen.py),
and in labelled steps that read top to bottom:

  FilterByLicense       keep rows whose image license is allowed (settings.ALLOWED_LICENSES)
  GroupCaptionsByImage  one element per image with all its captions: each image is read once
  ReadImageBytes        Beam FileSystems (local, gs://) or HTTP for the location `url`
  DecodeAndResize       TensorFlow image ops (modules.preprocessing.decode_and_resize), to JPEG
  CleanCaptions         modules.preprocessing.clean_caption_texts on batches of images
  ToExamples            one tf.Example per caption (or one Avro record with fmt='avro')
  WriteDeadLetter       one CSV row per caption whose image failed: id, image_id, reason, ...

The pure functions and constants the steps use are in `records`. Every
setting reaches `run` and the steps as a value: the command line
(`pipeline.tools.images`) and the component read them from `Settings`.
"""

import json
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from modules import constants, features
from pipeline.artifacts import files
from pipeline.csv_input import reader
from pipeline.images import records
from pipeline.images.records import CaptionFormatError, ImageFailure
from pipeline.settings import ALLOWED_LICENSES

log = logging.getLogger('coco_captions.images')

FAILED = 'failed'          # tag of the failure outputs
FORMATS = ('tfrecord', 'avro')


def counter(name: str):
  """A counter of the stage (namespace records.COUNTER_NAMESPACE)."""
  return Metrics.counter(records.COUNTER_NAMESPACE, name)


# ------------------------------------------------------------------ caption rows
def captions_pattern(path: str) -> str:
  """A CSV file as is; a directory (local or gs:// prefix) -> every file in it,
  as CsvExampleGen reads its input_base."""
  if any(c in path for c in '*?['):
    return path
  if os.path.isdir(path) or path.endswith('/') or not FileSystems.exists(path):
    return FileSystems.join(path.rstrip('/'), '*')
  return path


def caption_file_rows(path: str, data: bytes) -> Iterator[Dict[str, Any]]:
  """Rows of one caption CSV's bytes, read by the ExampleGen executor's reader
  (csv_input.reader.caption_rows: its header repairs and row checks), with
  their ids as integers. A repair is logged and the row kept; a rejected row
  stops the stage with the problem's text (file:line: column ...): run alone,
  the stage has no dead letter for bad rows. A missing required column stops
  it with the checks' CsvFormatError."""
  for line, row, problems in reader.caption_rows(path, data):
    rejected = [p for p in problems if p.action == files.REJECTED]
    for problem in problems:
      if problem.action != files.REJECTED:
        log.info('%s', problem)
    if rejected:
      raise CaptionFormatError('; '.join(str(p) for p in rejected))
    if row is not None:
      yield records.parse_row(row, f'{path}:{line}')


def parse_caption_file(readable: fileio.ReadableFile) -> Iterator[Dict[str, Any]]:
  """Rows of one matched caption file (local or gs://), read whole through the
  CSV reader's own opening (a .gz is decompressed there, not by Beam)."""
  path = readable.metadata.path
  return caption_file_rows(path, reader.read_bytes(path))


class ReadCaptionCsv(beam.PTransform):
  """CSV files of pipeline.tools.ingest -> row dicts (whole files: captions may hold newlines)."""

  def __init__(self, captions: str):
    super().__init__()
    self._pattern = captions_pattern(captions)

  def expand(self, pipeline):
    return (pipeline
            | 'ListCaptionFiles' >> fileio.MatchFiles(self._pattern)
            | 'OpenCaptionFiles' >> fileio.ReadMatches(skip_directories=True)
            | 'ParseCaptionRows' >> beam.FlatMap(parse_caption_file))


class ReadCaptionExamples(beam.PTransform):
  """One split of CsvExampleGen's examples -> row dicts tagged with the split."""

  def __init__(self, split_uri: str, split: str):
    super().__init__()
    self._uri, self._split = split_uri, split

  def expand(self, pipeline):
    split, where = self._split, self._uri
    return (pipeline
            | 'ReadExamples' >> beam.io.ReadFromTFRecord(FileSystems.join(self._uri, '*'))
            | 'ToRows' >> beam.Map(records.row_from_example, split, where))


# ------------------------------------------------------------------ images
class FilterByLicense(beam.DoFn):
  """Passes rows whose image license is allowed; counts the others, per split.

  Per split because a portable runner fuses this step into each producer of
  the Flatten of the splits before it, and Flink then keeps only one fused
  stage's value of a counter several stages share (225 of 650 filtered
  captions on coco-mini: the eval split's); a name per split is incremented in
  one stage only. `records.summary_counts` adds them up.
  """

  def __init__(self, allowed: Sequence[str]):
    self._allowed = tuple(allowed)

  def process(self, row):
    if records.license_allowed(row, self._allowed):
      yield row
    else:
      counter(records.filtered_counter(row.get(records.SPLIT_KEY))).inc()


def _fail(image: Dict[str, Any], failure: ImageFailure, source: str):
  """Counts a failed image and sends it to the FAILED output."""
  counter(f'failed_{failure.reason}_images').inc()
  counter(f'failed_{failure.reason}_captions').inc(len(image['rows']))
  # Plain values, not the exception: elements cross process boundaries pickled.
  return beam.pvalue.TaggedOutput(FAILED, (image['rows'], failure.reason, failure.detail, source,
                                           image.get('attempts', failure.attempts)))


def _count_retries(attempts: int, recovered: bool) -> None:
  if attempts > 1:
    counter('retried_images').inc()
    counter('read_retries').inc(attempts - 1)
    if recovered:
      counter('recovered_images').inc()


class ReadImageBytes(beam.DoFn):
  """(image_id, rows) -> {'rows', 'source', 'data', 'attempts'}; transient
  read failures retried (records.read_with_retries), failures to FAILED."""

  def __init__(self, location: str, timeout: float):
    self._location, self._timeout = location, timeout

  def process(self, keyed):
    _, rows = keyed
    rows = sorted(rows, key=lambda r: r[features.CAPTION_ID_KEY])
    image = {'rows': rows, 'source': ''}
    try:
      image['source'] = records.image_source(rows[0], self._location)
      image['data'], retries = records.read_with_retries(image['source'], self._timeout)
    except ImageFailure as failure:
      _count_retries(failure.attempts, recovered=False)
      yield _fail(image, failure, image['source'])
      return
    image['attempts'] = retries + 1
    _count_retries(image['attempts'], recovered=True)
    yield image


class DecodeAndResize(beam.DoFn):
  """Raw bytes -> JPEG at size x size; undecodable bytes to FAILED ('corrupt')."""

  def __init__(self, size: int, quality: int):
    self._size, self._quality = size, quality

  def process(self, image):
    image = dict(image)          # Beam inputs are not to be modified
    data = image.pop('data')
    try:
      image['jpeg'] = records.resize_image(data, self._size, self._quality)
    except ImageFailure as failure:
      yield _fail(image, failure, image['source'])
      return
    yield image


class CleanCaptions(beam.DoFn):
  """A batch of images -> one record per caption, the captions cleaned in one
  TensorFlow call by the very function the transform graph uses."""

  def __init__(self, size: int):
    self._size = size
    self._kept_images = counter('kept_images')
    self._kept_captions = counter('kept_captions')

  def process(self, images):
    from modules.preprocessing import clean_caption_texts  # pylint: disable=g-import-not-at-top
    rows = [row for image in images for row in image['rows']]
    cleaned = iter(clean_caption_texts([row[features.CAPTION_KEY] for row in rows]))
    for image in images:
      self._kept_images.inc()
      for row in image['rows']:
        self._kept_captions.inc()
        record = {
            features.IMAGE_ID_KEY: row[features.IMAGE_ID_KEY],
            features.CAPTION_ID_KEY: row[features.CAPTION_ID_KEY],
            features.CAPTION_KEY: next(cleaned),
            features.IMAGE_KEY: image['jpeg'],
            features.IMAGE_HEIGHT_KEY: self._size,
            features.IMAGE_WIDTH_KEY: self._size,
        }
        if records.SPLIT_KEY in row:
          record[records.SPLIT_KEY] = row[records.SPLIT_KEY]
        yield record


class ImagesAndCaptions(beam.PTransform):
  """Caption rows -> (records, dead-letter lines): the stage's steps, in order."""

  def __init__(self, location: str, size: int = constants.IMAGE_SIZE,
               allowed_licenses: Sequence[str] = ALLOWED_LICENSES,
               http_timeout: float = records.HTTP_TIMEOUT_SECONDS,
               quality: int = records.JPEG_QUALITY):
    super().__init__()
    if not location:
      raise ValueError('no image location: give a directory, a gs:// prefix or "url"')
    if size < 1:
      raise ValueError(f'image size must be positive, got {size}')
    self._location, self._size, self._quality = location, size, quality
    self._allowed, self._timeout = tuple(allowed_licenses), http_timeout

  def expand(self, rows):
    images = (rows
              | 'FilterByLicense' >> beam.ParDo(FilterByLicense(self._allowed))
              | 'KeyByImage' >> beam.Map(lambda row: (row[features.IMAGE_ID_KEY], row))
              | 'GroupCaptionsByImage' >> beam.GroupByKey())
    read = images | 'ReadImageBytes' >> beam.ParDo(
        ReadImageBytes(self._location, self._timeout)).with_outputs(FAILED, main='images')
    resized = read.images | 'DecodeAndResize' >> beam.ParDo(
        DecodeAndResize(self._size, self._quality)).with_outputs(FAILED, main='images')
    kept = (resized.images
            | 'BatchImages' >> beam.BatchElements(min_batch_size=1, max_batch_size=64)
            | 'CleanCaptions' >> beam.ParDo(CleanCaptions(self._size)))
    dead_letter = ((read[FAILED], resized[FAILED])
                   | 'CollectFailures' >> beam.Flatten()
                   | 'OneLinePerCaption' >> beam.FlatMap(records.dead_letter_lines))
    return kept, dead_letter


# ------------------------------------------------------------------ outputs
class WriteDeadLetter(beam.PTransform):
  """The dead letter (files.DEAD_LETTER_FILE) as one CSV file with a header,
  written even when empty."""

  def __init__(self, directory: str):
    super().__init__()
    self._prefix, self._suffix = os.path.splitext(files.dead_letter_path(directory))

  def expand(self, lines):
    return lines | 'WriteDeadLetterCsv' >> beam.io.WriteToText(
        self._prefix, file_name_suffix=self._suffix, num_shards=1, shard_name_template='',
        header=','.join(records.DEAD_LETTER_COLUMNS))


def write_summary(directory: str, counts: Dict[str, Any], seconds: float) -> str:
  """summary.json beside the dead letter: the counts and the wall time."""
  path = files.image_summary_path(directory)
  with FileSystems.create(path) as f:
    f.write(json.dumps(dict(counts, seconds=round(seconds, 2),
                            summary=records.summary_line(counts)), indent=2).encode('utf-8'))
  return path


# ------------------------------------------------------------------ standalone run
def run(captions: str, images: str, output: str, *, fmt: str = 'tfrecord', size: int,
        allowed_licenses: Sequence[str], http_timeout: float, beam_args: List[str]
        ) -> Dict[str, Any]:
  """Runs the stage alone: caption CSV(s) + images -> OUTPUT/images-*.tfrecord.gz
  (or .avro), OUTPUT/dead_letter.csv and OUTPUT/summary.json; returns the counts
  (with 'seconds', the wall time of the Beam run)."""
  if fmt not in FORMATS:
    raise ValueError(f'format {fmt!r}; choose one of {FORMATS}')
  pipeline = beam.Pipeline(argv=list(beam_args))
  kept, dead_letter = (
      pipeline
      | 'ReadCaptionRows' >> ReadCaptionCsv(captions)
      | 'ImagesAndCaptions' >> ImagesAndCaptions(images, size, allowed_licenses, http_timeout))
  prefix = FileSystems.join(output, 'images')
  if fmt == 'tfrecord':
    _ = (kept
         | 'ToExamples' >> beam.Map(records.caption_example)
         | 'WriteExamples' >> beam.io.WriteToTFRecord(
             prefix, coder=beam.coders.ProtoCoder(_example_class()),
             file_name_suffix='.tfrecord.gz'))
  else:
    _ = (kept
         | 'ToAvroRecords' >> beam.Map(records.avro_record)
         | 'WriteAvro' >> beam.io.WriteToAvro(prefix, schema=records.AVRO_SCHEMA,
                                              file_name_suffix='.avro'))
  _ = dead_letter | 'WriteDeadLetter' >> WriteDeadLetter(output)
  start = time.time()
  result = pipeline.run()
  result.wait_until_finish()
  seconds = time.time() - start
  counts = records.summary_counts(records.counters_of(result))
  write_summary(output, counts, seconds)
  return dict(counts, seconds=seconds)


def _example_class():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.train.Example
