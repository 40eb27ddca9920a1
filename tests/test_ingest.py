"""The ingestion tool: official COCO caption annotations -> the pipeline CSV."""

import csv
import functools
import http.server
import json
import os
import threading
import zipfile

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
import pytest
from tfx.components.example_gen.csv_example_gen.executor import _CsvToExample

from pipeline.tools import ingest
from tests.conftest import VAL2017, shared_file
from modules import features

TRICKY = [
    'A man, a plan, a canal',
    'She said "hello" to the dog',
    'Two lines\nin one caption ',
    'Crème brûlée on a café table — 東京',
    'trailing spaces   ',
    '"',
]


def annotations():
  return {
      'info': {'description': 'test'},
      'licenses': [{'id': 1, 'name': 'Attribution License', 'url': 'u1'},
                   {'id': 7, 'name': 'No known copyright restrictions', 'url': 'u7'}],
      'images': [
          {'id': 42, 'license': 1, 'file_name': '42.jpg', 'coco_url': 'http://x/42.jpg'},
          {'id': 7, 'license': 7, 'file_name': '7.jpg', 'coco_url': 'http://x/7.jpg'},
          {'id': 9, 'file_name': '9.jpg', 'coco_url': 'http://x/9.jpg'},  # no license
      ],
      'annotations': [{'image_id': [42, 7, 9][i % 3], 'id': 100 + i, 'caption': text}
                      for i, text in enumerate(TRICKY)],
  }


def read_csv(path):
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.reader(f))


@pytest.fixture
def annotations_json(tmp_path):
  path = tmp_path / 'captions_val2017.json'
  path.write_text(json.dumps(annotations(), ensure_ascii=False), encoding='utf-8')
  return str(path)


def test_roundtrip_keeps_text_intact_and_maps_licenses(annotations_json, tmp_path):
  out = str(tmp_path / 'out.csv')
  assert ingest.ingest(annotations_json, out) == len(TRICKY)
  rows = read_csv(out)
  assert tuple(rows[0]) == features.RAW_COLUMNS
  assert [r[2] for r in rows[1:]] == TRICKY
  assert [(r[0], r[1]) for r in rows[1:3]] == [('42', '100'), ('7', '101')]
  assert rows[1][3:] == ['http://x/42.jpg', '42.jpg', 'Attribution License']
  assert rows[2][5] == 'No known copyright restrictions'
  assert rows[3][5] == ''  # image without a license


def test_csv_examplegen_reads_what_ingest_writes(annotations_json, tmp_path):
  """CsvExampleGen's own reader gets every caption back byte for byte."""
  data_dir = tmp_path / 'csv'
  ingest.ingest(annotations_json, str(data_dir / 'captions.csv'))
  with beam.Pipeline() as p:
    result = (p | _CsvToExample({'input_base': str(data_dir)}, '*')
              | beam.Map(lambda e: (e.features.feature['id'].int64_list.value[0],
                                    e.features.feature['caption'].bytes_list.value[0].decode())))
    assert_that(result, equal_to([(100 + i, t) for i, t in enumerate(TRICKY)]))


def test_zip_of_annotations(annotations_json, tmp_path):
  archive = tmp_path / 'annotations_trainval2017.zip'
  with zipfile.ZipFile(archive, 'w') as z:
    z.write(annotations_json, 'annotations/captions_val2017.json')
    z.write(annotations_json, 'annotations/captions_train2017.json')
    z.writestr('annotations/instances_val2017.json', '{}')
  out = str(tmp_path / 'all.csv')
  assert ingest.ingest(str(archive), out) == 2 * len(TRICKY)
  assert ingest.ingest(str(archive), out, member='captions_val2017.json') == len(TRICKY)


def test_http_url(annotations_json, tmp_path):
  handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                              directory=os.path.dirname(annotations_json))
  handler.log_message = lambda *args: None
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  threading.Thread(target=server.serve_forever, daemon=True).start()
  try:
    url = f'http://127.0.0.1:{server.server_port}/{os.path.basename(annotations_json)}'
    out = str(tmp_path / 'url.csv')
    assert ingest.ingest(url, out) == len(TRICKY)
    assert [r[2] for r in read_csv(out)[1:]] == TRICKY
    with pytest.raises(ingest.IngestError, match='download failed'):
      ingest.ingest(url + '.missing', out)
  finally:
    server.shutdown()


def test_shards_split_rows_and_each_has_a_header(annotations_json, tmp_path):
  out = str(tmp_path / 'sharded' / 'captions.csv')
  assert ingest.ingest(annotations_json, out, shards=4) == len(TRICKY)
  files = sorted(os.listdir(tmp_path / 'sharded'))
  assert files == [f'captions-0000{i}-of-00004.csv' for i in range(4)]
  shards = [read_csv(str(tmp_path / 'sharded' / f)) for f in files]
  assert all(tuple(rows[0]) == features.RAW_COLUMNS for rows in shards)
  assert sorted(r[2] for rows in shards for r in rows[1:]) == sorted(TRICKY)


def test_max_images_keeps_whole_images(annotations_json, tmp_path):
  out = str(tmp_path / 'few.csv')
  assert ingest.ingest(annotations_json, out, max_images=2) == 4  # images 7 and 9
  assert {r[0] for r in read_csv(out)[1:]} == {'7', '9'}


@pytest.mark.parametrize('content, message', [
    ('{"images": [], ', 'not valid JSON'),
    ('{"annotations": []}', 'no "images" list'),
    ('{"images": [{"id": 1}], "annotations": [{"image_id": 1, "id": 5}]}',
     r'annotations\[0\] has no "caption"'),
    ('{"images": [{"id": 1}], "annotations": [{"image_id": 2, "id": 5, "caption": "x"}]}',
     'refers to image_id 2'),
])
def test_bad_annotations_name_file_and_place(tmp_path, content, message):
  path = tmp_path / 'bad.json'
  path.write_text(content)
  with pytest.raises(ingest.IngestError, match=message) as error:
    ingest.ingest(str(path), str(tmp_path / 'out.csv'))
  assert str(path) in str(error.value)
  assert not os.path.exists(tmp_path / 'out.csv')


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
  assert ingest.main([str(tmp_path / 'nope.json'), '-o', str(tmp_path / 'o.csv')]) == 2
  assert 'no such file' in capsys.readouterr().err


def test_official_val2017(tmp_path):
  out = str(tmp_path / 'val2017.csv')
  assert ingest.ingest(shared_file(VAL2017), out) == 25014
  rows = read_csv(out)[1:]
  assert len(rows) == 25014
  assert len({r[1] for r in rows}) == 25014
  assert sum('\n' in r[2] for r in rows) > 0  # real embedded newlines survive
  assert all(r[5] for r in rows)  # every val2017 image names a license


def test_a_gz_output_is_gzip_with_the_same_csv_and_the_same_bytes_every_time(tmp_path):
  import gzip  # pylint: disable=g-import-not-at-top
  source = tmp_path / 'captions.json'
  source.write_text(json.dumps({
      'images': [{'id': 1, 'coco_url': 'u1', 'file_name': 'a.jpg', 'license': 1}],
      'licenses': [{'id': 1, 'name': 'Attribution License'}],
      'annotations': [{'id': 10, 'image_id': 1, 'caption': 'A dog, "quoted"\non two lines'}]}))
  plain, packed, again = tmp_path / 'c.csv', tmp_path / 'c.csv.gz', tmp_path / 'again.CSV.GZ'
  assert ingest.ingest(str(source), str(plain)) == 1
  assert ingest.ingest(str(source), str(packed)) == 1
  assert ingest.main([str(source), '-o', str(again)]) == 0
  assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
  assert packed.read_bytes() == again.read_bytes()
  assert packed.read_bytes()[3:8] == bytes(5)   # gzip header: no file name, no time
  assert not list(tmp_path.glob('*.partial*'))
  assert ingest.shard_paths(str(packed), 2) == [str(tmp_path / 'c-00000-of-00002.csv.gz'),
                                               str(tmp_path / 'c-00001-of-00002.csv.gz')]
  assert ingest.shard_paths(str(again), 2)[0] == str(tmp_path / 'again-00000-of-00002.CSV.GZ')
