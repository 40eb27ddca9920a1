"""The image stage's constants and pure functions: what one caption row, one
image and one run's counters become, without Beam's pipeline machinery
(`transforms` builds the Beam steps from these).

Images that cannot be used are counted, never lost silently: each failure
reason (FAILURE_REASONS: missing, corrupt, read_error, http_error, timeout)
is a Beam counter and a dead-letter row (DEAD_LETTER_COLUMNS), and a run ends
with one summary line (`summary_line`).

Reads that fail transiently (timeouts, HTTP 5xx and 429, connection resets,
filesystem errors other than a missing file) are retried with exponential
backoff, at most READ_ATTEMPTS times and never starting a retry later than
RETRY_BUDGET_SECONDS after the first attempt (`read_with_retries`); permanent
failures (HTTP 4xx, a missing file, undecodable bytes) are not. Retries are
counted apart from final failures: in the summary and in the dead letter's
`attempts` column.

Image location: a directory or gs:// prefix holding each row's `file_name`; a
`{folder}` in it is replaced by the folder of the row's COCO URL (train2017,
val2017, ...), so `.../coco/{folder}` reads COCO's own layout; `url` fetches
each row's `url` over HTTP(S).
"""

import csv
import io
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from modules import features
from pipeline.settings import IMAGE_FOLDER_PLACEHOLDER, IMAGE_URL_LOCATION, ImageSettings

FAILURE_REASONS = ('missing', 'corrupt', 'read_error', 'http_error', 'timeout')
COUNTER_NAMESPACE = 'coco_images'   # the Beam counters of the stage
JPEG_QUALITY = 90                   # of the resized images
HTTP_TIMEOUT_SECONDS = ImageSettings.http_timeout   # per image with location 'url' (10s)
READ_ATTEMPTS = 4            # per image: the first read and up to 3 retries
RETRY_FIRST_WAIT = 0.5       # seconds before the first retry, doubled before each next one
RETRY_BUDGET_SECONDS = 30.0  # no retry starts later than this after the first attempt
HTTP_TRANSIENT = frozenset({429}) | frozenset(range(500, 600))
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
DEAD_LETTER_COLUMNS = ('id', 'image_id', 'reason', 'detail', 'source', 'attempts')
ROW_COLUMNS = features.RAW_COLUMNS   # the fields of a caption row the stage carries
INT_COLUMNS = (features.IMAGE_ID_KEY, features.CAPTION_ID_KEY)
SPLIT_KEY = 'split'        # rows read from split examples carry their split name


class CaptionFormatError(ValueError):
  """A caption row the stage cannot read, naming the file, the row and the field."""


class ImageFailure(Exception):
  """An image that cannot be used: `reason` is one of FAILURE_REASONS;
  `transient` when trying again may succeed; `attempts`: reads made."""

  def __init__(self, reason: str, detail: str, transient: bool = False, attempts: int = 1):
    assert reason in FAILURE_REASONS, reason
    super().__init__(f'{reason}: {detail}')
    self.reason = reason
    self.detail = detail
    self.transient = transient
    self.attempts = attempts


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
  """The body of a GET, or ImageFailure('http_error' | 'timeout'), transient
  for 5xx, 429, timeouts and connection errors."""
  try:
    with urllib.request.urlopen(url, timeout=timeout) as response:
      return response.read()
  except urllib.error.HTTPError as e:
    raise ImageFailure('http_error', f'HTTP {e.code} {e.reason}',
                       transient=e.code in HTTP_TRANSIENT) from None
  except urllib.error.URLError as e:
    if isinstance(e.reason, (socket.timeout, TimeoutError)):
      raise ImageFailure('timeout', f'no answer within {timeout:g}s', transient=True) from None
    raise ImageFailure('http_error', str(e.reason), transient=True) from None
  except (socket.timeout, TimeoutError):
    raise ImageFailure('timeout', f'no answer within {timeout:g}s', transient=True) from None
  except OSError as e:  # connection reset mid-body and the like
    raise ImageFailure('http_error', f'{type(e).__name__}: {e}', transient=True) from None


def read_image_bytes(source: str, timeout: float) -> bytes:
  """The raw bytes of an image: HTTP(S) for URLs, Beam's FileSystems otherwise
  (local paths, gs://, every filesystem Beam knows), so the same code runs on
  a laptop and on Dataflow workers. One attempt; see `read_with_retries`."""
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
    permanent = isinstance(e, (PermissionError, IsADirectoryError, NotADirectoryError))
    raise ImageFailure('read_error', f'{type(e).__name__}: {e}',
                       transient=not permanent) from None


def read_with_retries(source: str, timeout: float, *, attempts: int = READ_ATTEMPTS,
                      first_wait: float = RETRY_FIRST_WAIT,
                      budget: float = RETRY_BUDGET_SECONDS,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> Tuple[bytes, int]:
  """(bytes, retries) of an image, retrying transient failures with
  exponential backoff: at most `attempts` reads, and no retry that would
  start later than `budget` seconds after the first. The final ImageFailure
  says how many reads were made (in `attempts` and in its detail)."""
  start, wait = clock(), first_wait
  for attempt in range(1, attempts + 1):
    try:
      return read_image_bytes(source, timeout), attempt - 1
    except ImageFailure as failure:
      out_of_time = clock() + wait - start > budget
      if not failure.transient or attempt == attempts or out_of_time:
        detail = failure.detail + (f' ({attempt} attempts)' if attempt > 1 else '')
        raise ImageFailure(failure.reason, detail, failure.transient, attempt) from None
    sleep(wait)
    wait *= 2
  raise AssertionError('unreachable')


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
  """(rows, reason, detail, source, attempts) of a failed image -> one CSV
  line per caption (DEAD_LETTER_COLUMNS), quoted like any CSV."""
  rows, reason, detail, source, attempts = failed
  lines = []
  for row in rows:
    out = io.StringIO()
    csv.writer(out, lineterminator='').writerow(
        [row[features.CAPTION_ID_KEY], row[features.IMAGE_ID_KEY], reason, detail, source,
         attempts])
    lines.append(out.getvalue())
  return lines


# ------------------------------------------------------------------ counts
FILTERED_COUNTER = 'filtered_license_captions'


def filtered_counter(split: Optional[str]) -> str:
  """The counter of captions filtered by license in `split` (None: rows read
  from a captions CSV, outside the pipeline's splits)."""
  return FILTERED_COUNTER + (f'_split_{split}' if split else '')


def summary_counts(counters: Dict[str, int]) -> Dict[str, Any]:
  """Counter values -> the summary's structure (zeros for counters never incremented)."""
  value = lambda name: int(counters.get(name, 0))
  return {
      'kept_captions': value('kept_captions'),
      'kept_images': value('kept_images'),
      'filtered_license_captions': sum(int(v) for k, v in counters.items()
                                       if k.startswith(FILTERED_COUNTER)),
      'failed_captions': {r: value(f'failed_{r}_captions') for r in FAILURE_REASONS},
      'failed_images': {r: value(f'failed_{r}_images') for r in FAILURE_REASONS},
      # Retries, apart from the final failures above: images read more than
      # once, the extra reads, and the retried images whose read succeeded.
      'retried_images': value('retried_images'),
      'read_retries': value('read_retries'),
      'recovered_images': value('recovered_images'),
  }


def summary_line(counts: Dict[str, Any]) -> str:
  """The one line a run ends with: kept, filtered by license, failed by reason."""
  failed = counts['failed_captions']
  reasons = ', '.join(f'{r} {n}' for r, n in failed.items() if n)
  failed_images = sum(counts['failed_images'].values())
  retried = counts.get('retried_images', 0)
  return (f'images: kept {counts["kept_captions"]} captions of {counts["kept_images"]} images; '
          f'filtered by license {counts["filtered_license_captions"]} captions; '
          f'failed {sum(failed.values())} captions of {failed_images} images'
          + (f' ({reasons})' if reasons else '')
          + (f'; retried {retried} images ({counts["read_retries"]} retries, '
             f'{counts["recovered_images"]} recovered)' if retried else ''))


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
