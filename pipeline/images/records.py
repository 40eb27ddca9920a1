"""The image stage's constants and pure functions: what one caption row, one
image and one run's counters become, without Beam's pipeline machinery
(`transforms` builds the Beam steps from these).

Images that cannot be used are counted, never lost silently: each failure
reason (FAILURE_REASONS: missing, corrupt, read_error, http_error, timeout)
is a Beam counter and a dead-letter row (DEAD_LETTER_COLUMNS), and a run ends
with one summary line (`summary_line`).

Image location: a directory or gs:// prefix holding each row's `file_name`; a
`{folder}` in it is replaced by the folder of the row's COCO URL (train2017,
val2017, ...), so `.../coco/{folder}` reads COCO's own layout; `url` fetches
each row's `url` over HTTP(S).
"""

import csv
import io
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Sequence

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from modules import features
from pipeline.settings import IMAGE_FOLDER_PLACEHOLDER, IMAGE_URL_LOCATION, ImageSettings

FAILURE_REASONS = ('missing', 'corrupt', 'read_error', 'http_error', 'timeout')
COUNTER_NAMESPACE = 'coco_images'   # the Beam counters of the stage
JPEG_QUALITY = 90                   # of the resized images
HTTP_TIMEOUT_SECONDS = ImageSettings.http_timeout   # per image with location 'url' (10s)
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
ROW_COLUMNS = features.RAW_COLUMNS   # the fields of a caption row the stage carries
INT_COLUMNS = (features.IMAGE_ID_KEY, features.CAPTION_ID_KEY)
SPLIT_KEY = 'split'        # rows read from split examples carry their split name


class CaptionFormatError(ValueError):
  """A caption row the stage cannot read, naming the file, the row and the field."""


class ImageFailure(Exception):
  """An image that cannot be used: `reason` is one of FAILURE_REASONS."""

  def __init__(self, reason: str, detail: str):
    assert reason in FAILURE_REASONS, reason
    super().__init__(f'{reason}: {detail}')
    self.reason = reason
    self.detail = detail


# ------------------------------------------------------------------ rows
def license_allowed(row: Dict[str, Any], allowed: Sequence[str]) -> bool:
  """The image of this row may be used: its license name is in `allowed`.
  Rows without a license are not allowed (no license is no permission)."""
  return bool(row.get(features.LICENSE_KEY)) and row[features.LICENSE_KEY] in allowed


def parse_row(raw: Dict[str, Any], where: str) -> Dict[str, Any]:
  """A caption row with its ids as integers; CaptionFormatError names the field."""
  row = {key: raw.get(key) or '' for key in ROW_COLUMNS}
  for key in INT_COLUMNS:
    value = row[key]
    try:
      row[key] = int(value)
    except (TypeError, ValueError):
      raise CaptionFormatError(f'{where}: field {key!r} is not an integer: {value!r}') from None
  return row


def row_from_example(serialized: bytes, split: str, where: str) -> Dict[str, Any]:
  """A caption row from one of CsvExampleGen's tf.Examples (inside the pipeline)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  example_features = tf.train.Example.FromString(serialized).features.feature
  raw = {}
  for key in ROW_COLUMNS:
    feature = example_features.get(key)
    if feature is None:
      continue
    values = (feature.int64_list.value or feature.bytes_list.value or feature.float_list.value)
    if values:
      value = values[0]
      raw[key] = value.decode('utf-8') if isinstance(value, bytes) else value
  row = parse_row(raw, f'{where}: caption id {raw.get(features.CAPTION_ID_KEY, "?")}')
  row[SPLIT_KEY] = split
  return row


# ------------------------------------------------------------------ images
def url_folder(url: str) -> str:
  """'http://images.cocodataset.org/val2017/0001.jpg' -> 'val2017': COCO names
  each image's split folder in its URL."""
  parts = [p for p in urllib.parse.urlsplit(url).path.split('/') if p]
  return parts[-2] if len(parts) >= 2 else ''


def image_source(row: Dict[str, Any], location: str) -> str:
  """Where this row's image is read: a URL, a local path or a gs:// object.

  Raises ImageFailure('missing') when the row lacks what the location needs.
  """
  url = row.get(features.URL_KEY) or ''
  if location == IMAGE_URL_LOCATION:
    if not url:
      raise ImageFailure('missing', 'the row has no url')
    return url
  file_name = row.get(features.FILE_NAME_KEY) or ''
  if not file_name:
    raise ImageFailure('missing', 'the row has no file_name')
  if IMAGE_FOLDER_PLACEHOLDER in location:
    folder = url_folder(url)
    if not folder:
      raise ImageFailure('missing', f'{location} needs the folder of the url, and the row '
                                    f'has url {url!r}')
    location = location.replace(IMAGE_FOLDER_PLACEHOLDER, folder)
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


def resize_image(data: bytes, size: int, quality: int = JPEG_QUALITY) -> bytes:
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


# ------------------------------------------------------------------ outputs
def caption_example(record: Dict[str, Any]) -> 'tf.train.Example':
  """One tf.Example per caption: the JPEG, its size, the cleaned caption and the ids."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  def ints(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
  def raw(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
  return tf.train.Example(features=tf.train.Features(feature={
      features.IMAGE_KEY: raw(record[features.IMAGE_KEY]),
      features.IMAGE_HEIGHT_KEY: ints(record[features.IMAGE_HEIGHT_KEY]),
      features.IMAGE_WIDTH_KEY: ints(record[features.IMAGE_WIDTH_KEY]),
      features.CAPTION_KEY: raw(record[features.CAPTION_KEY].encode('utf-8')),
      features.IMAGE_ID_KEY: ints(record[features.IMAGE_ID_KEY]),
      features.CAPTION_ID_KEY: ints(record[features.CAPTION_ID_KEY]),
  }))


def avro_record(record: Dict[str, Any]) -> Dict[str, Any]:
  """The Avro format's record: {id, caption, image} (AVRO_SCHEMA)."""
  if not -2**31 <= record[features.CAPTION_ID_KEY] < 2**31:
    raise ValueError(f'caption id {record[features.CAPTION_ID_KEY]} does not fit the Avro '
                     "schema's 32-bit int id; use --format tfrecord")
  return {'id': record[features.CAPTION_ID_KEY], 'caption': record[features.CAPTION_KEY],
          'image': record[features.IMAGE_KEY]}


def dead_letter_lines(failed: Sequence[Any]) -> List[str]:
  """(rows, reason, detail, source) of a failed image -> one CSV line per
  caption (DEAD_LETTER_COLUMNS), quoted like any CSV."""
  rows, reason, detail, source = failed
  lines = []
  for row in rows:
    out = io.StringIO()
    csv.writer(out, lineterminator='').writerow(
        [row[features.CAPTION_ID_KEY], row[features.IMAGE_ID_KEY], reason, detail, source])
    lines.append(out.getvalue())
  return lines


# ------------------------------------------------------------------ counts
def summary_counts(counters: Dict[str, int]) -> Dict[str, Any]:
  """Counter values -> the summary's structure (zeros for counters never incremented)."""
  value = lambda name: int(counters.get(name, 0))
  return {
      'kept_captions': value('kept_captions'),
      'kept_images': value('kept_images'),
      'filtered_license_captions': value('filtered_license_captions'),
      'failed_captions': {r: value(f'failed_{r}_captions') for r in FAILURE_REASONS},
      'failed_images': {r: value(f'failed_{r}_images') for r in FAILURE_REASONS},
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
  query = result.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE))
  for result_counter in query['counters']:
    value = (result_counter.committed if result_counter.committed is not None
             else result_counter.attempted)
    name = result_counter.key.metric.name
    found[name] = found.get(name, 0) + int(value or 0)
  return found
