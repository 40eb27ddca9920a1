"""The image stage (pipeline/images/, pipeline/tools/images.py), its component,
and images in the pipeline.

Unit tests of the pure functions first; then the stage on the real COCO images
of ../shared/data/coco-mini (skipped with the reason when absent): counts,
sizes, a temp copy with a corrupt and a missing image, HTTP failures against a
server on localhost; last, the whole pipeline with images under LocalDagRunner
(slow).
"""

import csv
import glob
import html
import http.server
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from modules import constants, features
from modules.preprocessing import clean_caption_texts, clean_captions, normalized_images
from pipeline import settings
from pipeline.artifacts import files, metadata
from pipeline.artifacts.types import ImageDeadLetter
from pipeline.csv_input.checks import CsvFormatError
from pipeline.images import records, transforms
from pipeline.settings import Settings, SettingsError
from pipeline.tools import images as images_tool
from pipeline.tools import ingest
from tests.conftest import COMPONENTS, E2E_TRAIN_STEPS, SHARED_DATA, run_local, settings_of

COCO_MINI = os.path.join(SHARED_DATA, 'coco-mini')
SPLITS = ('train2017', 'val2017')
SIZE = 48   # small output images keep the stage tests quick; the e2e uses the default


# ------------------------------------------------------------------ helpers
def coco_mini() -> str:
  if not os.path.isdir(os.path.join(COCO_MINI, 'annotations')):
    pytest.skip(f'{COCO_MINI} is absent (159 real COCO images with their captions; '
                'the shared data sets live in ../shared/data)')
  return COCO_MINI


def ingest_coco_mini(out_dir: str, splits=SPLITS) -> str:
  """The project's ingestion tool on the official annotations: one CSV per split."""
  root = coco_mini()
  for split in splits:
    ingest.ingest(os.path.join(root, 'annotations', f'captions_{split}.json'),
                  os.path.join(out_dir, f'{split}.csv'))
  return out_dir


def read_csv_rows(path: str):
  """Rows of one or more CSVs, with the split folder (the file's stem) added."""
  paths = sorted(glob.glob(os.path.join(path, '*.csv'))) if os.path.isdir(path) else [path]
  rows = []
  for p in paths:
    with open(p, newline='', encoding='utf-8') as f:
      for row in csv.DictReader(f):
        row['folder'] = os.path.splitext(os.path.basename(p))[0]
        rows.append(row)
  return rows


def read_tfrecords(pattern: str):
  files = sorted(glob.glob(pattern))
  assert files, pattern
  return [tf.train.Example.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(files, compression_type='GZIP')]


def feature(example, key):
  f = example.features.feature[key]
  return (f.int64_list.value or f.bytes_list.value or f.float_list.value)[0]


def dead_letter(directory: str):
  with open(files.dead_letter_path(directory), newline='', encoding='utf-8') as f:
    reader = csv.DictReader(f)
    assert tuple(reader.fieldnames) == records.DEAD_LETTER_COLUMNS
    return list(reader)


def png_bytes(height: int, width: int, channels: int = 3) -> bytes:
  ramp = np.linspace(0, 255, height * width * channels).astype(np.uint8)
  return tf.io.encode_png(ramp.reshape(height, width, channels)).numpy()


# ------------------------------------------------------------------ pure functions
def test_license_filter_keeps_only_the_allowed_names():
  allowed = settings.ALLOWED_LICENSES
  assert allowed == ('Attribution License', 'No known copyright restrictions')
  assert records.license_allowed({'license': 'Attribution License'}, allowed)
  assert records.license_allowed({'license': 'No known copyright restrictions'}, allowed)
  for name in ('Attribution-NonCommercial License', 'attribution license', '', None):
    assert not records.license_allowed({'license': name}, allowed), name


def test_images_switch_and_allowed_licenses_from_the_settings():
  default = Settings.from_env({}).images
  assert not default.enabled and default.location is None
  assert default.licenses == settings.ALLOWED_LICENSES
  assert default.size == constants.IMAGE_SIZE
  assert default.http_timeout == records.HTTP_TIMEOUT_SECONDS == 10.0
  assert Settings.from_env({'COCO_IMAGES': '1'}).images.enabled
  assert not Settings.from_env({'COCO_IMAGES': '0'}).images.enabled
  with pytest.raises(SettingsError, match="COCO_IMAGES='maybe'"):
    Settings.from_env({'COCO_IMAGES': 'maybe'})
  licenses = Settings.from_env(
      {'COCO_IMAGE_LICENSES': 'Attribution License, Attribution-ShareAlike License'}).images
  assert licenses.licenses == ('Attribution License', 'Attribution-ShareAlike License')


def test_image_source_directory_folder_placeholder_gcs_and_url():
  row = {'url': 'http://images.cocodataset.org/val2017/000000000139.jpg',
         'file_name': '000000000139.jpg'}
  assert records.url_folder(row['url']) == 'val2017'
  assert records.image_source(row, '/data/val2017') == '/data/val2017/000000000139.jpg'
  assert records.image_source(row, '/coco/{folder}') == '/coco/val2017/000000000139.jpg'
  assert records.image_source(row, 'gs://b/coco/{folder}') == 'gs://b/coco/val2017/000000000139.jpg'
  assert records.image_source(row, 'url') == row['url']
  for broken, location in (({'url': '', 'file_name': 'x.jpg'}, 'url'),
                           ({'url': row['url'], 'file_name': ''}, '/data'),
                           ({'url': '', 'file_name': 'x.jpg'}, '/coco/{folder}')):
    with pytest.raises(records.ImageFailure) as failure:
      records.image_source(broken, location)
    assert failure.value.reason == 'missing'


def test_resize_gives_the_configured_square_rgb_jpeg_from_any_format():
  for data in (png_bytes(30, 70), png_bytes(90, 20, channels=1), png_bytes(10, 10, channels=4)):
    out = records.resize_image(data, SIZE)
    decoded = tf.io.decode_jpeg(out)
    assert decoded.shape == (SIZE, SIZE, 3)


def test_resize_keeps_the_picture():
  """A left-to-right ramp stays a left-to-right ramp (same content, not just a size)."""
  ramp = np.tile(np.linspace(0, 255, 200).astype(np.uint8), (100, 1))
  data = tf.io.encode_png(np.stack([ramp] * 3, axis=-1)).numpy()
  decoded = tf.io.decode_jpeg(records.resize_image(data, SIZE)).numpy().astype(float)
  columns = decoded.mean(axis=(0, 2))
  assert columns[0] < 20 and columns[-1] > 235
  assert np.all(np.diff(columns) > -3)


@pytest.mark.parametrize('data', [b'', b'not an image at all', b'\xff\xd8\xff\xe0' + b'\0' * 64])
def test_undecodable_bytes_are_corrupt(data):
  with pytest.raises(records.ImageFailure) as failure:
    records.resize_image(data, SIZE)
  assert failure.value.reason == 'corrupt'
  assert '{{' not in failure.value.detail and '[Op:' not in failure.value.detail


def test_read_image_bytes_missing_and_unreadable(tmp_path):
  path = tmp_path / 'a.jpg'
  path.write_bytes(b'abc')
  assert records.read_image_bytes(str(path), 1.0) == b'abc'
  with pytest.raises(records.ImageFailure) as missing:
    records.read_image_bytes(str(tmp_path / 'nope.jpg'), 1.0)
  assert missing.value.reason == 'missing'
  with pytest.raises(records.ImageFailure) as unreadable:   # a directory exists but is no file
    records.read_image_bytes(str(tmp_path), 1.0)
  assert unreadable.value.reason == 'read_error'


def test_caption_cleaning_is_the_transform_function_on_a_batch():
  raw = ['A Man riding a horse.', "The man's  dog\n", 'ÉCOLE ; Café—naïve', '...', 'It\u2019s']
  batch = clean_caption_texts(raw)
  one_by_one = [clean_captions(tf.constant([text])).numpy()[0].decode() for text in raw]
  assert batch == one_by_one == ['a man riding a horse', 'the mans dog', 'école café naïve', '',
                                 'its']
  assert clean_caption_texts([]) == []


def test_bad_caption_rows_name_the_file_line_and_column(tmp_path):
  """The stage reads captions with the ExampleGen executor's reader and checks;
  run alone it has no dead letter for bad rows, so a rejected row stops it."""
  path = str(tmp_path / 'c.csv')
  data = (b'image_id,id,caption,url,file_name,license\n'
          b'1,10,"ok",u,f.jpg,Attribution License\n'
          b'x1,11,"bad",u,f.jpg,Attribution License\n')
  rows = transforms.caption_file_rows(path, data)
  assert next(rows) == {'image_id': 1, 'id': 10, 'caption': 'ok', 'url': 'u',
                        'file_name': 'f.jpg', 'license': 'Attribution License'}
  with pytest.raises(records.CaptionFormatError,
                     match=r"c\.csv:3: column 'image_id': 'x1' is not an integer"):
    next(rows)
  with pytest.raises(CsvFormatError, match="c\\.csv:1: required column 'caption' is missing"):
    list(transforms.caption_file_rows(path, b'image_id,id,url\n1,2,u\n'))


def test_caption_rows_without_image_columns_are_read_and_their_images_missing(tmp_path):
  """url, file_name and license are not required columns: such rows are read
  (ids as integers) and their images are missing, as for empty values."""
  (row,) = transforms.caption_file_rows(str(tmp_path / 'c.csv'),
                                        b'image_id,id,caption\n1,2,three\n')
  assert row == {'image_id': 1, 'id': 2, 'caption': 'three', 'url': '', 'file_name': '',
                 'license': ''}
  for location in ('/data', 'url'):
    with pytest.raises(records.ImageFailure) as failure:
      records.image_source(row, location)
    assert failure.value.reason == 'missing'


def test_caption_file_repairs_are_logged_and_the_rows_kept(tmp_path, caplog):
  """A file without its header row (as the Beam docs' example) and one with a
  byte-order mark are read as the ExampleGen executor reads them."""
  caplog.set_level(logging.INFO, logger='coco_captions.images')
  path = str(tmp_path / 'c.csv')
  (row,) = transforms.caption_file_rows(path, b'7,70,"A dog.",u,f.jpg,Attribution License\n')
  assert (row['image_id'], row['id'], row['license']) == (7, 70, 'Attribution License')
  (row,) = transforms.caption_file_rows(path, b'\xef\xbb\xbfimage_id,id,caption\n1,2,three\n')
  assert (row['image_id'], row['id']) == (1, 2)
  logged = [r.getMessage() for r in caplog.records if r.name == 'coco_captions.images']
  assert len(logged) == 2 and all(m.startswith(f'{path}:1:') for m in logged)
  assert 'no header row' in logged[0] and 'byte-order mark' in logged[1]


def test_a_rejected_caption_row_stops_the_command_with_exit_2(tmp_path, capsys):
  path = tmp_path / 'c.csv'
  path.write_text('image_id,id,caption,url,file_name,license\n'
                  '1,10,"ok",u,f.jpg,Attribution License\n'
                  '2,11,"",u,f.jpg,Attribution License\n')
  assert images_tool.main(['--captions', str(path), '--images', str(tmp_path),
                           '--output', str(tmp_path / 'out'), '--size', str(SIZE)],
                          settings=Settings.from_env({})) == 2
  assert f"error: {path}:3: column 'caption': empty caption" in capsys.readouterr().err


def test_summary_line_counts_every_reason():
  counts = records.summary_counts({'kept_captions': 7, 'kept_images': 2,
                                   'filtered_license_captions': 4, 'failed_missing_captions': 5,
                                   'failed_missing_images': 1, 'failed_timeout_captions': 3,
                                   'failed_timeout_images': 1})
  assert counts['failed_captions']['corrupt'] == 0
  assert records.summary_line(counts) == (
      'images: kept 7 captions of 2 images; filtered by license 4 captions; '
      'failed 8 captions of 2 images (missing 5, timeout 3)')


IMAGE_SPEC = {'caption': tf.io.FixedLenFeature([1], tf.string),
              'image_id': tf.io.FixedLenFeature([1], tf.int64),
              'id': tf.io.FixedLenFeature([1], tf.int64),
              'image': tf.io.FixedLenFeature([1], tf.string)}


@pytest.fixture(scope='module')
def with_images():
  """preprocessing_fn (tft_beam) on three captions: a white JPEG, a PNG, no image."""
  from tests.test_preprocessing import analyze_and_transform
  white = tf.io.encode_jpeg(tf.fill([8, 8, 3], tf.constant(255, tf.uint8))).numpy()
  rows = [{'image_id': [1], 'id': [1], 'caption': [b'a dog'], 'image': [white]},
          {'image_id': [2], 'id': [2], 'caption': [b'a cat'], 'image': [png_bytes(20, 30)]},
          {'image_id': [3], 'id': [3], 'caption': [b'no image'], 'image': [b'']}]
  out, output = analyze_and_transform(rows, IMAGE_SPEC, {'vocab_size': 5, 'max_tokens': 4})
  # the raw schema, as the Transform component writes it (the export parses with it)
  from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils
  metadata_io.write_metadata(
      dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(IMAGE_SPEC)),
      os.path.join(os.path.dirname(output.transform_savedmodel_dir),
                   output.RAW_METADATA_DIR))
  return rows, out, output


def test_preprocessing_fn_keeps_each_image_as_its_encoded_bytes(with_images):
  rows, out, output = with_images
  assert [r[features.TRANSFORMED_IMAGE_KEY] for r in out] == [r['image'][0] for r in rows]
  assert output.transformed_feature_spec()[features.TRANSFORMED_IMAGE_KEY] == \
      tf.io.FixedLenFeature([], tf.string)
  assert [r[features.NUM_TOKENS_KEY] for r in out] == [2, 2, 2]


def test_a_model_decodes_the_bytes_to_normalised_pixels(with_images):
  _, out, _ = with_images
  pixels = normalized_images(tf.constant([r[features.TRANSFORMED_IMAGE_KEY] for r in out]), 8)
  assert pixels.shape == (3, 8, 8, 3) and pixels.dtype == tf.float32
  pixels = pixels.numpy()
  assert np.allclose(pixels[0], 1.0, atol=0.01)
  assert 0.0 <= pixels[1].min() < pixels[1].max() <= 1.0
  assert np.all(pixels[2] == 0.0)


def raw_example(row) -> bytes:
  """A row as ImageExampleGen writes it: a serialized tf.Example."""
  feature = {key: tf.train.Feature(bytes_list=tf.train.BytesList(value=value))
             if isinstance(value[0], bytes) else
             tf.train.Feature(int64_list=tf.train.Int64List(value=value))
             for key, value in row.items()}
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_the_trainer_input_pipeline_decodes_the_transformed_jpeg(with_images, tmp_path):
  from tfx_bsl.public import tfxio
  from modules.inputs import image_dataset
  _, out, output = with_images
  path = str(tmp_path / 'transformed.tfrecord')
  with tf.io.TFRecordWriter(path) as writer:
    for row in out:
      writer.write(raw_example({key: [value] for key, value in row.items()
                                if key in (features.TRANSFORMED_IMAGE_ID_KEY,
                                           features.TRANSFORMED_IMAGE_KEY)}))
  factory = lambda files, options, schema: tfxio.TFExampleRecord(
      file_pattern=files, schema=schema).TensorFlowDataset(options)
  (batch,) = list(image_dataset(factory, [path], output, batch_size=8, size=8))
  assert batch[features.TRANSFORMED_IMAGE_ID_KEY].numpy().tolist() == [1, 2, 3]
  want = normalized_images(tf.constant([r[features.TRANSFORMED_IMAGE_KEY] for r in out]), 8)
  np.testing.assert_array_equal(batch[features.TRANSFORMED_IMAGE_KEY].numpy(), want.numpy())


@pytest.mark.slow      # ~9 s: a SavedModel with four signatures is exported and loaded
def test_the_export_decodes_raw_jpeg_bytes_in_its_serving_graph(with_images, tmp_path):
  from modules.export import export_model
  from modules.model import build_model
  rows, _, output = with_images
  export_model(build_model(constants.num_classes(5), 8, 8, 0.0), output, str(tmp_path),
               kneser_ney_perplexity=10.0, image_size=8)
  loaded = tf.saved_model.load(str(tmp_path))
  examples = tf.constant([raw_example(row) for row in rows])
  got = loaded.signatures[constants.IMAGE_SIGNATURE](examples=examples)
  want = normalized_images(tf.constant([r['image'][0] for r in rows]), 8)
  np.testing.assert_allclose(got[features.TRANSFORMED_IMAGE_KEY].numpy(), want.numpy(), atol=1e-6)
  # the scoring signatures still answer: examples carrying images, bare captions
  served = loaded.signatures[constants.SERVING_SIGNATURE](examples=examples)
  scored = loaded.signatures[constants.SCORE_SIGNATURE](captions=tf.constant([b'a dog']))
  for result in (served, scored):
    assert np.all(np.isfinite(result[constants.PERPLEXITY_OUTPUT].numpy()))


# ------------------------------------------------------------------ the stage on coco-mini
@pytest.fixture(scope='module')
def mini_run(tmp_path_factory):
  """The standalone stage on all of coco-mini: both splits, COCO's layout."""
  coco_mini()
  tmp = tmp_path_factory.mktemp('images')
  captions = ingest_coco_mini(str(tmp / 'captions'))
  output = str(tmp / 'out')
  counts = transforms.run(captions, os.path.join(COCO_MINI, settings.IMAGE_FOLDER_PLACEHOLDER),
                          output, size=SIZE, allowed_licenses=settings.ALLOWED_LICENSES,
                          http_timeout=records.HTTP_TIMEOUT_SECONDS,
                          beam_args=['--runner=DirectRunner'])
  return {'captions': captions, 'output': output, 'counts': counts,
          'rows': read_csv_rows(captions),
          'examples': read_tfrecords(os.path.join(output, 'images-*.tfrecord.gz'))}


def expected_kept(rows, image_dir_of):
  """Caption ids whose license is allowed and whose image file exists."""
  return {int(r['id']) for r in rows if r['license'] in settings.ALLOWED_LICENSES
          and os.path.isfile(os.path.join(image_dir_of(r), r['file_name']))}


def test_output_is_every_allowed_caption_whose_image_exists(mini_run):
  rows = mini_run['rows']
  kept = expected_kept(rows, lambda r: os.path.join(COCO_MINI, r['folder']))
  assert 0 < len(kept) < len(rows)   # the filter has something to keep and something to drop
  ids = [feature(e, 'id') for e in mini_run['examples']]
  assert len(ids) == len(set(ids)) and set(ids) == kept
  counts = mini_run['counts']
  assert counts['kept_captions'] == len(kept)
  assert counts['kept_images'] == len({int(r['image_id']) for r in rows if int(r['id']) in kept})
  assert counts['filtered_license_captions'] == sum(
      r['license'] not in settings.ALLOWED_LICENSES for r in rows)
  assert sum(counts['failed_captions'].values()) == 0
  assert dead_letter(mini_run['output']) == []
  with open(os.path.join(mini_run['output'], files.IMAGE_SUMMARY_FILE)) as f:
    assert json.load(f)['summary'] == records.summary_line(counts)


def test_every_output_image_decodes_to_the_configured_size(mini_run):
  for example in mini_run['examples']:
    decoded = tf.io.decode_jpeg(feature(example, 'image'))
    assert decoded.shape == (SIZE, SIZE, 3)
    assert feature(example, 'image_height') == feature(example, 'image_width') == SIZE


def test_records_carry_their_own_image_and_cleaned_caption(mini_run):
  """Each record's picture is its own image (closer to it than to any other
  kept image) and its caption is the raw one, cleaned."""
  by_id = {int(r['id']): r for r in mini_run['rows']}
  originals = {}
  for row in by_id.values():
    if row['license'] in settings.ALLOWED_LICENSES:
      path = os.path.join(COCO_MINI, row['folder'], row['file_name'])
      with open(path, 'rb') as f:
        image = tf.io.decode_jpeg(f.read(), channels=3)
      originals[int(row['image_id'])] = tf.image.resize(
          tf.image.convert_image_dtype(image, tf.float32), [SIZE, SIZE], antialias=True).numpy()
  seen = set()
  for example in mini_run['examples']:
    row = by_id[feature(example, 'id')]
    assert feature(example, 'image_id') == int(row['image_id'])
    assert feature(example, 'caption').decode() == clean_caption_texts([row['caption']])[0]
    if row['image_id'] in seen:
      continue
    seen.add(row['image_id'])
    pixels = tf.image.convert_image_dtype(tf.io.decode_jpeg(feature(example, 'image')),
                                          tf.float32).numpy()
    distance = {i: np.abs(pixels - o).mean() for i, o in originals.items()}
    own = distance.pop(int(row['image_id']))
    # JPEG at 48x48 costs up to ~0.03 on coco-mini; other images are >= 0.15 away.
    assert own < 0.06 and own < min(distance.values()) / 3


def test_corrupt_and_missing_images_land_in_the_dead_letter(tmp_path, capsys):
  """A temp copy of val2017 with one image overwritten by garbage and one
  deleted; run through the command line, Avro output."""
  coco_mini()
  captions = ingest_coco_mini(str(tmp_path / 'captions'), splits=('val2017',))
  rows = read_csv_rows(captions)
  image_dir = tmp_path / 'val2017'
  shutil.copytree(os.path.join(COCO_MINI, 'val2017'), image_dir)
  for path in image_dir.iterdir():
    path.chmod(0o644)   # the shared copy is read-only
  allowed = sorted({r['file_name'] for r in rows if r['license'] in settings.ALLOWED_LICENSES})
  assert len(allowed) >= 3
  corrupt, missing = allowed[0], allowed[1]
  (image_dir / corrupt).write_bytes(b'\xff\xd8\xff\xe0 these bytes are not a JPEG')
  (image_dir / missing).unlink()
  output = tmp_path / 'out'

  assert images_tool.main(['--captions', os.path.join(captions, 'val2017.csv'),
                           '--images', str(image_dir), '--output', str(output),
                           '--format', 'avro', '--size', str(SIZE)]) == 0

  ids_of = lambda name: {int(r['id']) for r in rows if r['file_name'] == name}
  dead = dead_letter(str(output))
  assert {int(d['id']): d['reason'] for d in dead} == {
      **{i: 'corrupt' for i in ids_of(corrupt)}, **{i: 'missing' for i in ids_of(missing)}}
  for d in dead:
    assert d['source'] == str(image_dir / (corrupt if d['reason'] == 'corrupt' else missing))
    assert d['detail']

  import fastavro
  avro_records = []
  for path in sorted(glob.glob(str(output / 'images-*.avro'))):
    with open(path, 'rb') as f:
      reader = fastavro.reader(f)
      assert [field['name'] for field in reader.writer_schema['fields']] == ['id', 'caption',
                                                                             'image']
      avro_records += list(reader)
  kept = {r['id'] for r in avro_records}
  allowed_ids = {int(r['id']) for r in rows if r['license'] in settings.ALLOWED_LICENSES}
  assert kept | {int(d['id']) for d in dead} == allowed_ids   # nothing else lost
  assert not kept & {int(d['id']) for d in dead}
  assert all(tf.io.decode_jpeg(r['image']).shape == (SIZE, SIZE, 3) for r in avro_records)

  out = capsys.readouterr().out
  summary = out.splitlines()[0]
  assert summary.startswith(
      f'images: kept {len(kept)} captions of {len(allowed) - 2} images; '
      f'filtered by license {len(rows) - len(allowed_ids)} captions; '
      f'failed {len(dead)} captions of 2 images '
      f'(missing {len(ids_of(missing))}, corrupt {len(ids_of(corrupt))})')
  assert 'images/s' in summary


class _Images(http.server.BaseHTTPRequestHandler):
  """Serves /ok.jpg, answers /gone.jpg with 404 and /slow.jpg too late;
  /flaky.jpg answers 503 to its first two requests, /reset.jpg closes the
  connection without an answer the first time; both then serve the image."""
  payload = b''
  requests: dict = {}

  def do_GET(self):  # noqa: N802
    seen = self.requests[self.path] = self.requests.get(self.path, 0) + 1
    if self.path == '/flaky/flaky.jpg' and seen <= 2:
      self.send_error(503)
    elif self.path == '/reset/reset.jpg' and seen == 1:
      self.close_connection = True
      self.connection.shutdown(2)
    elif self.path in ('/ok/ok.jpg', '/flaky/flaky.jpg', '/reset/reset.jpg'):
      self.send_response(200)
      self.send_header('Content-Length', str(len(self.payload)))
      self.end_headers()
      self.wfile.write(self.payload)
    elif self.path == '/slow/slow.jpg':
      time.sleep(1.5)
      try:
        self.send_response(200)
        self.end_headers()
      except OSError:
        pass
    else:
      self.send_error(404)

  def log_message(self, *args):
    pass


@pytest.fixture
def image_server(monkeypatch):
  monkeypatch.setenv('no_proxy', '127.0.0.1,localhost')   # never through a proxy
  _Images.payload = png_bytes(40, 60)
  _Images.requests = {}
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Images)
  server.daemon_threads = True
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{server.server_address[1]}'
  server.shutdown()
  server.server_close()


@pytest.mark.slow      # ~8 s, most of it the real timeouts and back-off waits
def test_url_images_http_errors_and_timeouts_are_dead_lettered(tmp_path, image_server):
  path = tmp_path / 'captions.csv'
  with open(path, 'w', newline='') as f:
    ingest.write_csv([
        [1, 11, 'A photo.', f'{image_server}/ok/ok.jpg', 'ok.jpg', 'Attribution License'],
        [1, 12, 'The same photo.', f'{image_server}/ok/ok.jpg', 'ok.jpg', 'Attribution License'],
        [2, 21, 'Gone.', f'{image_server}/gone/gone.jpg', 'gone.jpg', 'Attribution License'],
        [3, 31, 'Slow.', f'{image_server}/slow/slow.jpg', 'slow.jpg', 'Attribution License'],
        [4, 41, 'Not ours.', f'{image_server}/ok/ok.jpg', 'ok.jpg', 'Attribution-NonCommercial License'],
        [5, 51, 'Flaky.', f'{image_server}/flaky/flaky.jpg', 'flaky.jpg', 'Attribution License'],
        [6, 61, 'Reset.', f'{image_server}/reset/reset.jpg', 'reset.jpg', 'Attribution License'],
    ], [f])
  output = str(tmp_path / 'out')
  counts = transforms.run(str(path), 'url', output, size=SIZE,
                          allowed_licenses=settings.ALLOWED_LICENSES, http_timeout=0.5,
                          beam_args=['--runner=DirectRunner'])
  examples = read_tfrecords(os.path.join(output, 'images-*.tfrecord.gz'))
  assert sorted(feature(e, 'id') for e in examples) == [11, 12, 51, 61]
  assert {feature(e, 'caption') for e in examples} == {b'a photo', b'the same photo', b'flaky',
                                                       b'reset'}
  dead = {int(d['id']): (d['reason'], d['detail'], d['attempts']) for d in dead_letter(output)}
  # A 404 is final at once; a timeout is retried up to READ_ATTEMPTS reads.
  attempts = records.READ_ATTEMPTS
  assert dead == {21: ('http_error', 'HTTP 404 Not Found', '1'),
                  31: ('timeout', f'no answer within 0.5s ({attempts} attempts)', str(attempts))}
  assert _Images.requests['/gone/gone.jpg'] == 1
  assert _Images.requests['/flaky/flaky.jpg'] == 3 and _Images.requests['/reset/reset.jpg'] == 2
  assert counts['kept_images'] == 3 and counts['filtered_license_captions'] == 1
  assert counts['failed_images'] == dict.fromkeys(records.FAILURE_REASONS, 0) | {
      'http_error': 1, 'timeout': 1}
  # Retries apart from final failures: flaky (2), reset (1), slow (attempts - 1, not recovered).
  assert (counts['retried_images'], counts['recovered_images']) == (3, 2)
  assert counts['read_retries'] == 2 + 1 + (attempts - 1)
  assert records.summary_line(counts).endswith(
      f'; retried 3 images ({counts["read_retries"]} retries, 2 recovered)')


def test_reads_are_retried_with_backoff_only_when_the_failure_is_transient(image_server):
  waits = []
  data, retries = records.read_with_retries(f'{image_server}/flaky/flaky.jpg', 2.0,
                                            sleep=waits.append)
  assert (data, retries, waits) == (_Images.payload, 2, [records.RETRY_FIRST_WAIT,
                                                        2 * records.RETRY_FIRST_WAIT])
  waits.clear()
  with pytest.raises(records.ImageFailure) as failure:
    records.read_with_retries(f'{image_server}/gone/gone.jpg', 2.0, sleep=waits.append)
  assert (failure.value.reason, failure.value.attempts, waits) == ('http_error', 1, [])
  assert not failure.value.transient
  # Bounded in count...
  _Images.requests = {}
  with pytest.raises(records.ImageFailure) as failure:
    records.read_with_retries(f'{image_server}/flaky/flaky.jpg', 2.0, attempts=2,
                              sleep=waits.append)
  assert failure.value.attempts == 2
  assert failure.value.detail == 'HTTP 503 Service Unavailable (2 attempts)'
  # ... and in time: no retry starts past the budget (a fake clock: 10 s per
  # read; the second read starts at 10.5 s, a third would start at 21 s > 15 s).
  now = [0.0]
  def clock():
    now[0] += 10
    return now[0]
  _Images.requests = {}
  with pytest.raises(records.ImageFailure) as failure:
    records.read_with_retries(f'{image_server}/flaky/flaky.jpg', 2.0, budget=15,
                              sleep=lambda s: None, clock=clock)
  assert failure.value.attempts == 2
  # A missing local file is final; a local read error is not retried forever either.
  with pytest.raises(records.ImageFailure) as failure:
    records.read_with_retries('/nonexistent/x.jpg', 1.0, sleep=waits.append)
  assert (failure.value.reason, failure.value.attempts) == ('missing', 1)


# ------------------------------------------------------------------ the pipeline with images
@pytest.mark.slow
def test_pipeline_with_images_runs_end_to_end(tmp_path):
  """LocalDagRunner, images on, on a copy of coco-mini with one allowed image
  corrupted and one deleted: every component completes, ImageExampleGen keeps
  CsvExampleGen's split and dead-letters the two, Transform adds the image
  tensor, the Trainer exports a model whose raw-caption signature still answers."""
  captions = ingest_coco_mini(str(tmp_path / 'captions'))
  rows = read_csv_rows(captions)
  image_root = tmp_path / 'images'
  for split in SPLITS:
    shutil.copytree(os.path.join(COCO_MINI, split), image_root / split)
    for path in (image_root / split).iterdir():
      path.chmod(0o644)
  allowed = lambda split: sorted({r['file_name'] for r in rows if r['folder'] == split
                                  and r['license'] in settings.ALLOWED_LICENSES})
  corrupt, missing = image_root / 'val2017' / allowed('val2017')[0], \
      image_root / 'train2017' / allowed('train2017')[0]
  corrupt.write_bytes(corrupt.read_bytes()[:2000])   # a truncated JPEG
  missing.unlink()
  output_dir = str(tmp_path / 'run')
  env = dict(os.environ, COCO_OUTPUT_DIR=output_dir, COCO_DATA_ROOT=captions,
             COCO_IMAGES='1', COCO_IMAGE_DIR=str(image_root / '{folder}'),
             COCO_TRAIN_STEPS=str(E2E_TRAIN_STEPS), COCO_STEPS_PER_EPOCH='30')
  for name in ('COCO_IMAGE_SIZE', 'COCO_IMAGE_LICENSES', 'COCO_RUN_TO'):
    env.pop(name, None)
  result = run_local(env)
  assert result.returncode == 0, result.stdout + result.stderr[-5000:]

  run_settings = settings_of(env).run
  pipeline_root = run_settings.pipeline_root
  store = metadata.open_store(run_settings.metadata_file)
  runs = metadata.component_runs(store)
  # tests/test_pipeline.py checks the pipeline builds this order
  assert [r.component for r in runs] == COMPONENTS[:2] + ['ImageExampleGen'] + COMPONENTS[2:]
  assert {r.state for r in runs} == {'COMPLETE'}

  ids_of = lambda path: {int(r['id']) for r in rows if r['folder'] == path.parent.name
                         and r['file_name'] == path.name}
  kept = expected_kept(rows, lambda r: str(image_root / r['folder'])) - ids_of(corrupt)
  uri = lambda component, kind='Examples': [
      a.uri for a in store.get_artifacts_by_type(kind) if f'/{component}/' in a.uri][0]
  split_of_image = {}
  for split in ('train', 'eval'):
    for example in read_tfrecords(os.path.join(uri('CsvExampleGen'), f'Split-{split}', '*')):
      split_of_image[feature(example, 'image_id')] = split
  found = {}
  for split in ('train', 'eval'):
    examples = read_tfrecords(os.path.join(uri('ImageExampleGen'), f'Split-{split}', '*'))
    assert examples, split
    for example in examples:
      assert split_of_image[feature(example, 'image_id')] == split
      found[feature(example, 'id')] = example
  assert set(found) == kept
  side = tf.io.decode_jpeg(feature(next(iter(found.values())), 'image')).shape
  assert side == (constants.IMAGE_SIZE, constants.IMAGE_SIZE, 3)

  (report,) = store.get_artifacts_by_type(ImageDeadLetter.TYPE_NAME)
  properties = {k: v.int_value or v.string_value for k, v in report.custom_properties.items()}
  assert properties['kept_captions'] == len(kept)
  assert properties['failed_corrupt_images'] == properties['failed_missing_images'] == 1
  assert properties['failed_corrupt_captions'] == len(ids_of(corrupt))
  assert {int(d['id']): d['reason'] for d in dead_letter(report.uri)} == {
      **{i: 'corrupt' for i in ids_of(corrupt)}, **{i: 'missing' for i in ids_of(missing)}}
  summary = report.custom_properties['summary'].string_value
  assert f'images:        {summary.split(": ", 1)[1]}' in result.stdout

  schema_path = glob.glob(os.path.join(pipeline_root, 'SchemaGen', 'schema', '*', 'schema.pbtxt'))
  assert 'name: "image"' in open(schema_path[0]).read()
  # Transform keeps each caption's JPEG, byte for byte; the Trainer's input
  # pipeline (with TFX's own dataset factory) decodes it to pixels.
  transformed_uri = uri('Transform')
  transformed = read_tfrecords(os.path.join(transformed_uri, 'Split-eval', '*'))
  assert transformed
  for example in transformed:
    assert feature(example, features.TRANSFORMED_IMAGE_KEY) == \
        feature(found[feature(example, 'caption_id')], features.IMAGE_KEY)
  from tfx.components.util import tfxio_utils
  from tfx.types import artifact_utils, standard_artifacts
  import tensorflow_transform as tft
  from modules.inputs import image_dataset
  artifact = standard_artifacts.Examples()
  artifact.uri = transformed_uri
  artifact.split_names = artifact_utils.encode_split_names(['train', 'eval'])
  factory = tfxio_utils.get_tf_dataset_factory_from_artifact([artifact], [])
  batch = next(iter(image_dataset(
      factory, [os.path.join(transformed_uri, 'Split-eval', '*')],
      tft.TFTransformOutput(uri('Transform', 'TransformGraph')), batch_size=4,
      size=constants.IMAGE_SIZE)))
  pixels = batch[features.TRANSFORMED_IMAGE_KEY].numpy()
  assert pixels.shape == (4, constants.IMAGE_SIZE, constants.IMAGE_SIZE, 3)
  assert 0 <= pixels.min() < pixels.max() <= 1

  model_dir = os.path.join(metadata.latest_model_uri(store), 'Format-Serving')
  scored = subprocess.run(
      [sys.executable, '-m', 'pipeline.tools.score', '--model', model_dir, 'A dog on a couch.'],
      capture_output=True, text=True, timeout=300, env=env)
  assert scored.returncode == 0, scored.stderr[-3000:]
  ppl, loglik, caption = scored.stdout.strip().split('\t')
  assert caption == 'A dog on a couch.' and float(ppl) > 1 and float(loglik) < 0
  # serving takes raw JPEG bytes: the model's decoded_images signature on
  # ImageExampleGen's examples gives the input pipeline's pixels
  eval_examples = read_tfrecords(os.path.join(uri('ImageExampleGen'), 'Split-eval', '*'))[:4]
  served = tf.saved_model.load(model_dir).signatures[constants.IMAGE_SIGNATURE](
      examples=tf.constant([e.SerializeToString() for e in eval_examples]))
  served = served[features.TRANSFORMED_IMAGE_KEY].numpy()
  assert served.shape == (4, constants.IMAGE_SIZE, constants.IMAGE_SIZE, 3)
  for example, image in zip(eval_examples, served):
    want = normalized_images(tf.constant([feature(example, features.IMAGE_KEY)]),
                             constants.IMAGE_SIZE).numpy()[0]
    np.testing.assert_allclose(image, want, atol=1e-6)

  # the run report renders every section from the images-on run's artifacts
  from pipeline.report.build import build_report
  report = build_report(pipeline_root, metadata_file=run_settings.metadata_file)
  assert report.missing == []
  assert 'ImageExampleGen' in report.html and 'image_height' in report.html   # components, schema
  eval_captions = {feature(e, features.CAPTION_KEY).decode() for e in read_tfrecords(
      os.path.join(uri('ImageExampleGen'), 'Split-eval', '*'))}
  assert any(html.escape(c) in report.html for c in eval_captions)   # the scored sample


def test_avro_records_follow_the_schema_and_refuse_ids_it_cannot_hold():
  record = {features.CAPTION_ID_KEY: 2**31 - 1, features.CAPTION_KEY: 'a dog',
            features.IMAGE_KEY: b'jpg'}
  assert records.avro_record(record) == {'id': 2**31 - 1, 'caption': 'a dog', 'image': b'jpg'}
  assert [f['type'] for f in records.AVRO_SCHEMA['fields']] == ['int', 'string', 'bytes']
  with pytest.raises(ValueError, match="caption id 2147483648 does not fit"):
    records.avro_record({**record, features.CAPTION_ID_KEY: 2**31})
