"""The image stage: caption rows + images -> image-caption records, as a Beam job.

    python -m pipeline.images --captions CSV_OR_DIR --images DIR|gs://PREFIX|url \\
        --output DIR [--format tfrecord|avro] [--size N]

The job the Beam/Kubeflow COCO example runs by hand before training, as a
tested stage: it reads the CSV rows written by `pipeline.ingest` (or, inside
the pipeline, CsvExampleGen's examples: see pipeline/images_component.py),
and in labelled steps that read top to bottom:

  FilterByLicense       keep rows whose image license is allowed (config.ALLOWED_LICENSES)
  GroupCaptionsByImage  one element per image with all its captions: each image is read once
  ReadImageBytes        Beam FileSystems (local, gs://) or HTTP for `--images url`
  DecodeAndResize       TensorFlow image ops (modules.preprocessing.decode_and_resize), to JPEG
  CleanCaptions         modules.preprocessing.clean_caption_texts on batches of images
  ToExamples            one tf.Example per caption (or one Avro record with --format avro)
  WriteDeadLetter       one CSV row per caption whose image failed: id, image_id, reason, ...

Images that cannot be used are counted, never lost silently: each failure
reason (config.FAILURE_REASONS: missing, corrupt, read_error, http_error,
timeout) is a Beam counter and a dead-letter row, and the run ends with one
summary line. The runner comes from `pipeline.beam.beam_pipeline_args()`
(`COCO_BEAM_MODE`: DirectRunner locally, DataflowRunner with `dataflow`).

Image location: a directory or gs:// prefix holding each row's `file_name`; a
`{folder}` in it is replaced by the folder of the row's COCO URL (train2017,
val2017, ...), so `.../coco/{folder}` reads COCO's own layout; `url` fetches
each row's `url` over HTTP(S).
"""

import argparse
import csv
import io
import json
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence

if __name__ == '__main__' and os.environ.get('COCO_VERBOSE', '0') in ('', '0'):
  # The command prints its summary; TensorFlow's and the GCP clients' import-time
  # chatter stays out unless COCO_VERBOSE=1 (set before they are imported).
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  warnings.filterwarnings('ignore')
  logging.getLogger('apache_beam').setLevel(logging.ERROR)

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter

from pipeline import config

log = logging.getLogger('coco_captions.images')

FAILED = 'failed'          # tag of the failure outputs
FORMATS = ('tfrecord', 'avro')
# The Avro format's schema: caption id, cleaned caption, JPEG bytes (the
# record the well-known COCO example writes; its id is a 32-bit int).
AVRO_SCHEMA = {
    'namespace': 'coco_captions',
    'type': 'record',
    'name': 'ImageCaption',
    'fields': [
        {'name': 'id', 'type': 'int'},
        {'name': 'caption', 'type': 'string'},
        {'name': 'image', 'type': 'bytes'},
    ],
}
DEAD_LETTER_COLUMNS = ('id', 'image_id', 'reason', 'detail', 'source')
REQUIRED_COLUMNS = (config.IMAGE_ID_KEY, config.CAPTION_ID_KEY, config.CAPTION_KEY,
                    config.URL_KEY, config.FILE_NAME_KEY, config.LICENSE_KEY)
INT_COLUMNS = (config.IMAGE_ID_KEY, config.CAPTION_ID_KEY)
SPLIT_KEY = 'split'        # rows read from split examples carry their split name


class CaptionFormatError(ValueError):
  """A caption row the stage cannot read, naming the file, the row and the field."""


class ImageFailure(Exception):
  """An image that cannot be used: `reason` is one of config.FAILURE_REASONS."""

  def __init__(self, reason: str, detail: str):
    assert reason in config.FAILURE_REASONS, reason
    super().__init__(f'{reason}: {detail}')
    self.reason = reason
    self.detail = detail


# ------------------------------------------------------------------ pure functions
def license_allowed(row: Dict[str, Any], allowed: Sequence[str]) -> bool:
  """The image of this row may be used: its license name is in `allowed`.
  Rows without a license are not allowed (no license is no permission)."""
  return bool(row.get(config.LICENSE_KEY)) and row[config.LICENSE_KEY] in allowed


def url_folder(url: str) -> str:
  """'http://images.cocodataset.org/val2017/0001.jpg' -> 'val2017': COCO names
  each image's split folder in its URL."""
  parts = [p for p in urllib.parse.urlsplit(url).path.split('/') if p]
  return parts[-2] if len(parts) >= 2 else ''


def image_source(row: Dict[str, Any], location: str) -> str:
  """Where this row's image is read: a URL, a local path or a gs:// object.

  Raises ImageFailure('missing') when the row lacks what the location needs.
  """
  url = row.get(config.URL_KEY) or ''
  if location == config.IMAGE_URL_LOCATION:
    if not url:
      raise ImageFailure('missing', 'the row has no url')
    return url
  file_name = row.get(config.FILE_NAME_KEY) or ''
  if not file_name:
    raise ImageFailure('missing', 'the row has no file_name')
  if config.IMAGE_FOLDER_PLACEHOLDER in location:
    folder = url_folder(url)
    if not folder:
      raise ImageFailure('missing', f'{location} needs the folder of the url, and the row '
                                    f'has url {url!r}')
    location = location.replace(config.IMAGE_FOLDER_PLACEHOLDER, folder)
  return FileSystems.join(location, file_name)


def http_get(url: str, timeout: float) -> bytes:
  """The body of a GET, or ImageFailure('http_error' | 'timeout')."""
  try:
    with urllib.request.urlopen(url, timeout=timeout) as response:
      return response.read()
  except urllib.error.HTTPError as e:
    raise ImageFailure('http_error', f'HTTP {e.code} {e.reason}') from None
  except urllib.error.URLError as e:
    if isinstance(e.reason, (socket.timeout, TimeoutError)):
      raise ImageFailure('timeout', f'no answer within {timeout:g}s') from None
    raise ImageFailure('http_error', str(e.reason)) from None
  except (socket.timeout, TimeoutError):
    raise ImageFailure('timeout', f'no answer within {timeout:g}s') from None
  except OSError as e:  # connection reset mid-body and the like
    raise ImageFailure('http_error', f'{type(e).__name__}: {e}') from None


def read_image_bytes(source: str, timeout: float) -> bytes:
  """The raw bytes of an image: HTTP(S) for URLs, Beam's FileSystems otherwise
  (local paths, gs://, every filesystem Beam knows), so the same code runs on
  a laptop and on Dataflow workers."""
  if source.startswith(('http://', 'https://')):
    return http_get(source, timeout)
  try:
    with FileSystems.open(source, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      return f.read()
  except Exception as e:  # pylint: disable=broad-except
    try:
      exists = FileSystems.exists(source)
    except Exception:  # pylint: disable=broad-except
      exists = True
    if not exists:
      raise ImageFailure('missing', 'no such file') from None
    raise ImageFailure('read_error', f'{type(e).__name__}: {e}') from None


def resize_image(data: bytes, size: int, quality: int = config.IMAGE_JPEG_QUALITY) -> bytes:
  """Decodes any image TensorFlow reads, scales it to size x size RGB and
  re-encodes it as JPEG; ImageFailure('corrupt') if the bytes are no image."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from modules.preprocessing import decode_and_resize  # pylint: disable=g-import-not-at-top
  if not data:
    raise ImageFailure('corrupt', 'empty file')
  try:
    image = decode_and_resize(tf.constant(data, tf.string), size)
  except (tf.errors.OpError, ValueError) as e:
    raise ImageFailure('corrupt', f'not a decodable image ({len(data)} bytes): '
                                  f'{tf_error_text(e)}') from None
  pixels = tf.image.convert_image_dtype(image, tf.uint8, saturate=True)
  return tf.io.encode_jpeg(pixels, quality=quality, format='rgb').numpy()


def tf_error_text(error: Exception) -> str:
  """The readable part of a TensorFlow op error ("jpeg::Uncompress failed. ..."),
  without the function-node and op decorations eager execution wraps it in."""
  text = getattr(error, 'message', None) or str(error)
  text = re.sub(r'\{\{[^}]*\}\}', '', text)
  text = re.sub(r'\s*\[Op:[^\]]*\].*$', '', text, flags=re.S)
  return ' '.join(text.split())


def caption_example(record: Dict[str, Any]) -> 'tf.train.Example':
  """One tf.Example per caption: the JPEG, its size, the cleaned caption and the ids."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  def ints(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
  def raw(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
  return tf.train.Example(features=tf.train.Features(feature={
      config.IMAGE_KEY: raw(record[config.IMAGE_KEY]),
      config.IMAGE_HEIGHT_KEY: ints(record[config.IMAGE_HEIGHT_KEY]),
      config.IMAGE_WIDTH_KEY: ints(record[config.IMAGE_WIDTH_KEY]),
      config.CAPTION_KEY: raw(record[config.CAPTION_KEY].encode('utf-8')),
      config.IMAGE_ID_KEY: ints(record[config.IMAGE_ID_KEY]),
      config.CAPTION_ID_KEY: ints(record[config.CAPTION_ID_KEY]),
  }))


def avro_record(record: Dict[str, Any]) -> Dict[str, Any]:
  """The Avro format's record: {id, caption, image} (AVRO_SCHEMA)."""
  if not -2**31 <= record[config.CAPTION_ID_KEY] < 2**31:
    raise ValueError(f'caption id {record[config.CAPTION_ID_KEY]} does not fit the Avro '
                     "schema's 32-bit int id; use --format tfrecord")
  return {'id': record[config.CAPTION_ID_KEY], 'caption': record[config.CAPTION_KEY],
          'image': record[config.IMAGE_KEY]}


def dead_letter_lines(failed: Sequence[Any]) -> List[str]:
  """(rows, reason, detail, source) of a failed image -> one CSV line per
  caption (DEAD_LETTER_COLUMNS), quoted like any CSV."""
  rows, reason, detail, source = failed
  lines = []
  for row in rows:
    out = io.StringIO()
    csv.writer(out, lineterminator='').writerow(
        [row[config.CAPTION_ID_KEY], row[config.IMAGE_ID_KEY], reason, detail, source])
    lines.append(out.getvalue())
  return lines


def parse_row(raw: Dict[str, Any], where: str) -> Dict[str, Any]:
  """A CSV row with its ids as integers; CaptionFormatError names the field."""
  row = {key: raw.get(key) or '' for key in REQUIRED_COLUMNS}
  for key in INT_COLUMNS:
    value = row[key]
    try:
      row[key] = int(value)
    except (TypeError, ValueError):
      raise CaptionFormatError(f'{where}: field {key!r} is not an integer: {value!r}') from None
  return row


def csv_rows(stream: io.TextIOBase, path: str) -> Iterator[Dict[str, Any]]:
  """Rows of one caption CSV (pipeline.ingest's columns; quoted newlines allowed)."""
  reader = csv.DictReader(stream)
  missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
  if missing:
    raise CaptionFormatError(f'{path}: no column {", ".join(map(repr, missing))} in the header '
                             f'{reader.fieldnames}; write it with `python -m pipeline.ingest`')
  for number, raw in enumerate(reader, 1):
    yield parse_row(raw, f'{path}: row {number} (line {reader.line_num})')


def row_from_example(serialized: bytes, split: str, where: str) -> Dict[str, Any]:
  """A caption row from one of CsvExampleGen's tf.Examples (inside the pipeline)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  features = tf.train.Example.FromString(serialized).features.feature
  raw = {}
  for key in REQUIRED_COLUMNS:
    feature = features.get(key)
    if feature is None:
      continue
    values = (feature.int64_list.value or feature.bytes_list.value or feature.float_list.value)
    if values:
      value = values[0]
      raw[key] = value.decode('utf-8') if isinstance(value, bytes) else value
  row = parse_row(raw, f'{where}: caption id {raw.get(config.CAPTION_ID_KEY, "?")}')
  row[SPLIT_KEY] = split
  return row


def captions_pattern(path: str) -> str:
  """A CSV file as is; a directory (local or gs:// prefix) -> every file in it,
  as CsvExampleGen reads its input_base."""
  if any(c in path for c in '*?['):
    return path
  if os.path.isdir(path) or path.endswith('/') or not FileSystems.exists(path):
    return FileSystems.join(path.rstrip('/'), '*')
  return path


def summary_counts(counters: Dict[str, int]) -> Dict[str, Any]:
  """Counter values -> the summary's structure (zeros for counters never incremented)."""
  value = lambda name: int(counters.get(name, 0))
  return {
      'kept_captions': value('kept_captions'),
      'kept_images': value('kept_images'),
      'filtered_license_captions': value('filtered_license_captions'),
      'failed_captions': {r: value(f'failed_{r}_captions') for r in config.FAILURE_REASONS},
      'failed_images': {r: value(f'failed_{r}_images') for r in config.FAILURE_REASONS},
  }


def summary_line(counts: Dict[str, Any]) -> str:
  """The one line a run ends with: kept, filtered by license, failed by reason."""
  failed = counts['failed_captions']
  reasons = ', '.join(f'{r} {n}' for r, n in failed.items() if n)
  failed_images = sum(counts['failed_images'].values())
  return (f'images: kept {counts["kept_captions"]} captions of {counts["kept_images"]} images; '
          f'filtered by license {counts["filtered_license_captions"]} captions; '
          f'failed {sum(failed.values())} captions of {failed_images} images'
          + (f' ({reasons})' if reasons else ''))


def counters_of(result) -> Dict[str, int]:
  """The stage's counters from a finished run (committed where the runner has
  them, attempted otherwise), summed over steps."""
  found: Dict[str, int] = {}
  query = result.metrics().query(MetricsFilter().with_namespace(config.IMAGE_COUNTER_NAMESPACE))
  for result_counter in query['counters']:
    value = (result_counter.committed if result_counter.committed is not None
             else result_counter.attempted)
    name = result_counter.key.metric.name
    found[name] = found.get(name, 0) + int(value or 0)
  return found


# ------------------------------------------------------------------ Beam steps
def counter(name: str):
  """A counter of the stage (namespace config.IMAGE_COUNTER_NAMESPACE)."""
  return Metrics.counter(config.IMAGE_COUNTER_NAMESPACE, name)


class ReadCaptionCsv(beam.PTransform):
  """CSV files of pipeline.ingest -> row dicts (whole files: captions may hold newlines)."""

  def __init__(self, captions: str):
    super().__init__()
    self._pattern = captions_pattern(captions)

  def expand(self, pipeline):
    return (pipeline
            | 'ListCaptionFiles' >> fileio.MatchFiles(self._pattern)
            | 'OpenCaptionFiles' >> fileio.ReadMatches(skip_directories=True)
            | 'ParseCaptionRows' >> beam.FlatMap(parse_caption_file))


def parse_caption_file(readable: fileio.ReadableFile) -> Iterator[Dict[str, Any]]:
  """Rows of one matched caption file (local or gs://), streamed."""
  with readable.open() as raw:
    yield from csv_rows(io.TextIOWrapper(raw, encoding='utf-8', newline=''),
                        readable.metadata.path)


class ReadCaptionExamples(beam.PTransform):
  """One split of CsvExampleGen's examples -> row dicts tagged with the split."""

  def __init__(self, split_uri: str, split: str):
    super().__init__()
    self._uri, self._split = split_uri, split

  def expand(self, pipeline):
    split, where = self._split, self._uri
    return (pipeline
            | 'ReadExamples' >> beam.io.ReadFromTFRecord(FileSystems.join(self._uri, '*'))
            | 'ToRows' >> beam.Map(row_from_example, split, where))


class FilterByLicense(beam.DoFn):
  """Passes rows whose image license is allowed; counts the others."""

  def __init__(self, allowed: Sequence[str]):
    self._allowed = tuple(allowed)
    self._filtered = counter('filtered_license_captions')

  def process(self, row):
    if license_allowed(row, self._allowed):
      yield row
    else:
      self._filtered.inc()


def _fail(image: Dict[str, Any], failure: ImageFailure, source: str):
  """Counts a failed image and sends it to the FAILED output."""
  counter(f'failed_{failure.reason}_images').inc()
  counter(f'failed_{failure.reason}_captions').inc(len(image['rows']))
  # Plain values, not the exception: elements cross process boundaries pickled.
  return beam.pvalue.TaggedOutput(FAILED, (image['rows'], failure.reason, failure.detail, source))


class ReadImageBytes(beam.DoFn):
  """(image_id, rows) -> {'rows', 'source', 'data'}; failures to FAILED."""

  def __init__(self, location: str, timeout: float):
    self._location, self._timeout = location, timeout

  def process(self, keyed):
    _, rows = keyed
    rows = sorted(rows, key=lambda r: r[config.CAPTION_ID_KEY])
    image = {'rows': rows, 'source': ''}
    try:
      image['source'] = image_source(rows[0], self._location)
      image['data'] = read_image_bytes(image['source'], self._timeout)
    except ImageFailure as failure:
      yield _fail(image, failure, image['source'])
      return
    yield image


class DecodeAndResize(beam.DoFn):
  """Raw bytes -> JPEG at size x size; undecodable bytes to FAILED ('corrupt')."""

  def __init__(self, size: int, quality: int):
    self._size, self._quality = size, quality

  def process(self, image):
    image = dict(image)          # Beam inputs are not to be modified
    data = image.pop('data')
    try:
      image['jpeg'] = resize_image(data, self._size, self._quality)
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
    cleaned = iter(clean_caption_texts([row[config.CAPTION_KEY] for row in rows]))
    for image in images:
      self._kept_images.inc()
      for row in image['rows']:
        self._kept_captions.inc()
        record = {
            config.IMAGE_ID_KEY: row[config.IMAGE_ID_KEY],
            config.CAPTION_ID_KEY: row[config.CAPTION_ID_KEY],
            config.CAPTION_KEY: next(cleaned),
            config.IMAGE_KEY: image['jpeg'],
            config.IMAGE_HEIGHT_KEY: self._size,
            config.IMAGE_WIDTH_KEY: self._size,
        }
        if SPLIT_KEY in row:
          record[SPLIT_KEY] = row[SPLIT_KEY]
        yield record


class ImagesAndCaptions(beam.PTransform):
  """Caption rows -> (records, dead-letter lines): the stage's steps, in order."""

  def __init__(self, location: str, size: int = config.IMAGE_SIZE,
               allowed_licenses: Sequence[str] = config.ALLOWED_LICENSES,
               http_timeout: float = config.IMAGE_HTTP_TIMEOUT_SECONDS,
               quality: int = config.IMAGE_JPEG_QUALITY):
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
              | 'KeyByImage' >> beam.Map(lambda row: (row[config.IMAGE_ID_KEY], row))
              | 'GroupCaptionsByImage' >> beam.GroupByKey())
    read = images | 'ReadImageBytes' >> beam.ParDo(
        ReadImageBytes(self._location, self._timeout)).with_outputs(FAILED, main='images')
    resized = read.images | 'DecodeAndResize' >> beam.ParDo(
        DecodeAndResize(self._size, self._quality)).with_outputs(FAILED, main='images')
    records = (resized.images
               | 'BatchImages' >> beam.BatchElements(min_batch_size=1, max_batch_size=64)
               | 'CleanCaptions' >> beam.ParDo(CleanCaptions(self._size)))
    dead_letter = ((read[FAILED], resized[FAILED])
                   | 'CollectFailures' >> beam.Flatten()
                   | 'OneLinePerCaption' >> beam.FlatMap(dead_letter_lines))
    return records, dead_letter


class WriteDeadLetter(beam.PTransform):
  """The dead letter as one CSV file with a header, written even when empty."""

  def __init__(self, directory: str):
    super().__init__()
    self._prefix = FileSystems.join(directory, config.DEAD_LETTER_NAME)

  def expand(self, lines):
    return lines | 'WriteDeadLetterCsv' >> beam.io.WriteToText(
        self._prefix, file_name_suffix='.csv', num_shards=1, shard_name_template='',
        header=','.join(DEAD_LETTER_COLUMNS))


def dead_letter_path(directory: str) -> str:
  return FileSystems.join(directory, config.DEAD_LETTER_NAME + '.csv')


def write_summary(directory: str, counts: Dict[str, Any], seconds: float) -> str:
  """summary.json beside the dead letter: the counts and the wall time."""
  path = FileSystems.join(directory, config.IMAGE_SUMMARY_NAME)
  with FileSystems.create(path) as f:
    f.write(json.dumps(dict(counts, seconds=round(seconds, 2),
                            summary=summary_line(counts)), indent=2).encode('utf-8'))
  return path


# ------------------------------------------------------------------ standalone run
def run(captions: str, images: str, output: str, *, fmt: str = 'tfrecord',
        size: Optional[int] = None, allowed_licenses: Optional[Sequence[str]] = None,
        http_timeout: Optional[float] = None, beam_args: Optional[List[str]] = None
        ) -> Dict[str, Any]:
  """Runs the stage alone: caption CSV(s) + images -> OUTPUT/images-*.tfrecord.gz
  (or .avro), OUTPUT/dead_letter.csv and OUTPUT/summary.json; returns the counts
  (with 'seconds', the wall time of the Beam run)."""
  if fmt not in FORMATS:
    raise ValueError(f'format {fmt!r}; choose one of {FORMATS}')
  from pipeline import beam as beam_settings  # pylint: disable=g-import-not-at-top
  size = size or config.image_size()
  pipeline = beam.Pipeline(argv=beam_args if beam_args is not None
                           else beam_settings.beam_pipeline_args())
  records, dead_letter = (
      pipeline
      | 'ReadCaptionRows' >> ReadCaptionCsv(captions)
      | 'ImagesAndCaptions' >> ImagesAndCaptions(
          images, size, allowed_licenses or config.allowed_licenses(),
          http_timeout or config.image_http_timeout()))
  prefix = FileSystems.join(output, 'images')
  if fmt == 'tfrecord':
    _ = (records
         | 'ToExamples' >> beam.Map(caption_example)
         | 'WriteExamples' >> beam.io.WriteToTFRecord(
             prefix, coder=beam.coders.ProtoCoder(_example_class()),
             file_name_suffix='.tfrecord.gz'))
  else:
    _ = (records
         | 'ToAvroRecords' >> beam.Map(avro_record)
         | 'WriteAvro' >> beam.io.WriteToAvro(prefix, schema=AVRO_SCHEMA,
                                              file_name_suffix='.avro'))
  _ = dead_letter | 'WriteDeadLetter' >> WriteDeadLetter(output)
  start = time.time()
  result = pipeline.run()
  result.wait_until_finish()
  seconds = time.time() - start
  counts = summary_counts(counters_of(result))
  write_summary(output, counts, seconds)
  return dict(counts, seconds=seconds)


def _example_class():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.train.Example


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      epilog='The Beam runner follows COCO_BEAM_MODE (in_memory, multi_processing, portable, '
             'dataflow) as everywhere else; see pipeline/beam.py.',
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--captions', required=True,
                      help='caption CSV from pipeline.ingest, or a directory (every file is read)')
  parser.add_argument('--images', required=True,
                      help='image directory or gs:// prefix ({folder} = the URL\'s folder, e.g. '
                           'val2017), or "url" to fetch each row\'s url')
  parser.add_argument('--output', required=True, help='output directory (local or gs://)')
  parser.add_argument('--format', choices=FORMATS, default='tfrecord',
                      help='tf.Example TFRecords (default) or Avro {id, caption, image}')
  parser.add_argument('--size', type=int, default=None,
                      help=f'output images are SIZE x SIZE (default {config.IMAGE_SIZE}, '
                           'COCO_IMAGE_SIZE)')
  args = parser.parse_args(argv)
  from pipeline import beam as beam_settings  # pylint: disable=g-import-not-at-top
  try:
    beam_args = beam_settings.beam_pipeline_args()
    counts = run(args.captions, args.images, args.output, fmt=args.format, size=args.size,
                 beam_args=beam_args)
  except (ValueError, CaptionFormatError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  kept = counts['kept_images']
  print(f'{summary_line(counts)}; {counts["seconds"]:.1f}s '
        f'({kept / max(counts["seconds"], 1e-9):.1f} images/s)')
  print(f'output: {args.output} (dead letter: {dead_letter_path(args.output)})')
  return 0


if __name__ == '__main__':
  # Run the imported module's main, not this __main__ copy: Beam pickles the
  # steps by reference, and workers in other processes (multi_processing,
  # Dataflow) can import `pipeline.images` but not this script's __main__.
  from pipeline import images as _module  # pylint: disable=g-import-not-at-top
  sys.exit(_module.main())
