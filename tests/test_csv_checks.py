"""Bad input: one clear message per problem (file, line, column), nothing lost.

Each case writes a CSV with good rows around one bad one and runs the
CsvExampleGen executor the pipeline uses (pipeline/components/csv_example_gen.py); the counts
come from the examples it wrote, the messages from its input report.
"""

import json
import os

import pytest

from bench import compare_examplegen as compare
from pipeline.artifacts import files
from pipeline.components import csv_example_gen
from pipeline.csv_input import checks, reader
from modules import constants, features

HEADER = 'image_id,id,caption,url,file_name,license\n'


def good(n, start=0):
  return ''.join(f'{100 + i},{1000 + i},A dog number {i} on a bench,u,f.jpg,Attribution License\n'
                 for i in range(start, start + n))


def run(tmp_path, contents, max_rejected=1.0):
  """Writes `contents` ({name: bytes or str}), runs the executor with the
  rejection limit in its custom_config, returns (examples written, report,
  artifact directory)."""
  data = tmp_path / 'data'
  data.mkdir(exist_ok=True)
  for name, content in contents.items():
    (data / name).write_bytes(content.encode() if isinstance(content, str) else content)
  out = str(tmp_path / 'out')
  compare.run_executor(csv_example_gen.Executor, str(data), out,
                       {csv_example_gen.MAX_REJECTED: max_rejected})
  splits = compare.read_splits(out)
  with open(os.path.join(out, files.INPUT_REPORT_FILE)) as f:
    report = json.load(f)
  return sum(sum(c.values()) for c in splits.values()), report, splits


def messages(report):
  return [str(checks.Problem(**p)) for p in report['problems']]


BAD_ROWS = {  # name: (bad row, column named in the message, words in the message)
    'too few fields': ('7,77,short row\n', 'url', 'the row has 3 fields'),
    'too many fields': ('7,77,long row,u,f,l,extra\n', 'field 7', 'the row has 7 fields'),
    'empty caption': ('7,77,  ,u,f,l\n', 'caption', 'empty caption'),
    'non-numeric image_id': ('seven,77,A cat,u,f,l\n', 'image_id', "'seven' is not an integer"),
    'non-numeric id': ('7,7x,A cat,u,f,l\n', 'id', "'7x' is not an integer"),
    'caption far too long': ('7,77,' + 'word ' * 300 + ',u,f,l\n', 'caption',
                             'caption of 1500 characters'),
    'unbalanced quote': ('7,77,"A cat on a mat,u,f,l\n', 'caption', 'unbalanced quote'),
}


@pytest.mark.parametrize('case', sorted(BAD_ROWS))
def test_a_bad_row_is_named_and_the_rows_around_it_are_kept(tmp_path, case):
  row, column, words = BAD_ROWS[case]
  written, report, _ = run(tmp_path, {'captions.csv': HEADER + good(3) + row + good(4, 3)})
  assert written == 7
  assert messages(report) == [
      f'{tmp_path}/data/captions.csv:5: column {column!r}: ' + messages(report)[0].split(
          f'column {column!r}: ', 1)[1]]
  assert words in messages(report)[0] and messages(report)[0].endswith('(row rejected)')


def test_non_utf8_bytes_are_named(tmp_path):
  content = (HEADER + good(2)).encode() + b'7,77,Caf\xe9 au lait,u,f,l\n' + good(2, 2).encode()
  written, report, _ = run(tmp_path, {'captions.csv': content})
  assert written == 4
  assert messages(report) == [f'{tmp_path}/data/captions.csv:4: column \'caption\': bytes '
                              'that are not UTF-8 at character 4 (row rejected)']


def test_an_unbalanced_quote_does_not_swallow_the_rows_after_it(tmp_path):
  rows = good(2) + '7,77,"She said hi,u,f,l\n' + good(5, 2) + '8,88,"never closed,u,f,l\n' + good(1, 7)
  written, report, _ = run(tmp_path, {'captions.csv': HEADER + rows})
  assert written == 8
  lines = [p['line'] for p in report['problems']]
  assert lines == [4, 10] and all(p['column'] == 'caption' for p in report['problems'])


def test_a_quoted_newline_is_a_caption_not_a_problem(tmp_path):
  written, report, _ = run(tmp_path, {'captions.csv': HEADER + '7,77,"two\nlines",u,f,l\n' + good(2)})
  assert written == 3 and report['problems'] == []


def test_duplicate_caption_ids_keep_the_first_and_name_the_second(tmp_path):
  files = {'a.csv': HEADER + good(3), 'b.csv': HEADER + good(1, 10) + '9,1001,Again,u,f,l\n'}
  written, report, _ = run(tmp_path, files)
  assert written == 4
  assert messages(report) == [
      f"{tmp_path}/data/b.csv:3: column 'id': duplicate caption id 1001; the first "
      f"occurrence, in {tmp_path}/data/a.csv, is kept (row rejected)"]


def test_no_header_row_is_read_with_the_pipeline_columns(tmp_path):
  """The two rows of the Apache Beam documentation's TFX example have no header."""
  beam_rows = ('318556,255,"An angled view of a beautifully decorated bathroom.","",'
               '"COCO_train2014_000000318556.jpg","Attribution-NonCommercial-ShareAlike License"\n'
               '476220,14,"An empty kitchen with white and black appliances.","",'
               '"COCO_train2014_000000476220.jpg","Attribution-NonCommercial License"\n')
  written, report, _ = run(tmp_path, {'beam.csv': beam_rows})
  assert written == 2
  assert messages(report) == [f'{tmp_path}/data/beam.csv:1: no header row; read the file as '
                              'image_id,id,caption,url,file_name,license (repaired)']


def test_bom_and_quoted_header_names_are_repaired(tmp_path):
  header = '\ufeff"image_id","id","caption","url","file_name","license"\n'
  written, report, _ = run(tmp_path, {'captions.csv': header + good(3)})
  assert written == 3
  assert [p['action'] for p in report['problems']] == ['repaired']
  assert messages(report) == [f"{tmp_path}/data/captions.csv:1: column 'image_id': byte-order "
                              'mark before the first name ignored (repaired)']


def test_extra_columns_are_kept_as_features(tmp_path):
  content = HEADER.strip() + ',photographer\n' + ''.join(
      line + ',someone\n' for line in good(3).splitlines())
  written, report, splits = run(tmp_path, {'captions.csv': content})
  assert written == 3
  assert messages(report) == [f"{tmp_path}/data/captions.csv:1: column 'photographer': extra "
                              'column kept as a feature (the model does not use it) (repaired)']


def test_a_missing_required_column_stops_the_run_naming_it(tmp_path):
  with pytest.raises(checks.CsvFormatError,
                     match=r"captions.csv:1: required column 'caption' is missing"):
    run(tmp_path, {'captions.csv': 'image_id,id,url\n1,2,u\n'})


def test_an_empty_file_is_skipped_and_named(tmp_path):
  written, report, _ = run(tmp_path, {'a.csv': HEADER + good(3), 'empty.csv': ''})
  assert written == 3
  assert messages(report) == [f'{tmp_path}/data/empty.csv:1: empty file skipped (repaired)']


def test_only_empty_files_or_an_empty_directory_stop_the_run(tmp_path):
  with pytest.raises(checks.CsvFormatError, match='every input file is empty: .*empty.csv'):
    run(tmp_path, {'empty.csv': ''})
  (tmp_path / 'nothing').mkdir()
  with pytest.raises(checks.CsvFormatError, match='nothing: no input files'):
    compare.run_executor(csv_example_gen.Executor, str(tmp_path / 'nothing'), str(tmp_path / 'o2'))


def test_too_many_rejections_stop_the_run_with_the_first_problem(tmp_path):
  bad = ''.join(f'{i},x{i},cap,u,f,l\n' for i in range(3))
  with pytest.raises(checks.CsvFormatError,
                     match=r"3 of 13 rows rejected, over the limit of 5% .*captions.csv:2: "
                           r"column 'id': 'x0' is not an integer"):
    run(tmp_path, {'captions.csv': HEADER + bad + good(10)}, max_rejected=0.05)


def test_long_captions_are_kept_and_counted(tmp_path):
  long_row = '7,77,' + ' '.join(['word'] * (constants.MAX_TOKENS + 4)) + ',u,f,l\n'
  written, report, _ = run(tmp_path, {'captions.csv': HEADER + good(2) + long_row})
  assert written == 3 and report['long_captions'] == 1 and report['problems'] == []
  out = str(tmp_path / 'longer')
  compare.run_executor(csv_example_gen.Executor, str(tmp_path / 'data'), out,
                       {csv_example_gen.MAX_TOKENS: constants.MAX_TOKENS + 4})
  assert files.input_report(out)['long_captions'] == 0   # the limit is the component's value


def test_row_checks_agree_with_the_vectorised_screening():
  """Any row row_problems() rejects must also be caught by block_needs_scan()."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  columns = list(features.RAW_COLUMNS)
  for row in (['1', '2', ' ', 'u', 'f', 'l'], ['a', '2', 'c', 'u', 'f', 'l'],
              ['1', '2', 'c' * 1001, 'u', 'f', 'l'], ['1', '2.5', 'c', 'u', 'f', 'l']):
    assert checks.row_problems('f', 1, columns, row)
    block = pa.RecordBatch.from_arrays([pa.array([v], pa.string()) for v in row], columns)
    assert checks.block_needs_scan(block, columns)


# ------------------------------------------------------------------ gzip-compressed input
def gz(text) -> bytes:
  import gzip  # pylint: disable=g-import-not-at-top
  return gzip.compress(text.encode() if isinstance(text, str) else text, mtime=0)


TWIN_CASES = {  # bad rows read row by row after a gzip stream, lines as in the plain file
    'non-numeric id': (HEADER + good(3) + BAD_ROWS['non-numeric id'][0] + good(4, 3), 7, [5]),
    'unbalanced quotes and a quoted newline': (
        HEADER + '7,77,"two\nlines",u,f,l\n' + good(2) + '8,88,"She said hi,u,f,l\n'
        + good(5, 2) + '9,99,"never closed,u,f,l\n' + good(1, 7), 9, [6, 12]),
    'bytes that are not UTF-8': ((HEADER + good(2)).encode() + b'7,77,Caf\xe9 au lait,u,f,l\n'
                                 + good(2, 2).encode(), 4, [4]),
}


@pytest.mark.parametrize('case', sorted(TWIN_CASES))
def test_a_gzip_file_reads_like_its_plain_twin_with_the_same_line_numbers(tmp_path, case):
  bad, rows, lines = TWIN_CASES[case]
  (tmp_path / 'plain').mkdir()
  (tmp_path / 'gz').mkdir()
  plain_count, plain_report, plain_splits = run(tmp_path / 'plain', {'captions.csv': bad})
  gz_count, gz_report, gz_splits = run(tmp_path / 'gz', {'captions.csv.gz': gz(bad)})
  assert gz_count == plain_count == rows
  assert gz_splits == plain_splits
  assert [p['line'] for p in gz_report['problems']] == lines
  assert messages(gz_report) == [m.replace(f'{tmp_path}/plain/data/captions.csv',
                                           f'{tmp_path}/gz/data/captions.csv.gz')
                                 for m in messages(plain_report)]


def test_a_gzip_file_without_problems_takes_the_fast_path_and_the_header_check(tmp_path):
  """No header row in the compressed file: repaired, as for a plain one."""
  count, report, _ = run(tmp_path, {'captions.csv.gz': gz(good(50))})
  assert count == 50
  assert [p['action'] for p in report['problems']] == [files.REPAIRED]
  assert 'captions.csv.gz:1: no header row' in messages(report)[0]


def flipped(data: bytes) -> bytes:
  middle = len(data) // 2
  return data[:middle] + bytes([data[middle] ^ 0xff]) + data[middle + 1:]


@pytest.mark.parametrize('damage', ['truncated', 'a flipped byte', 'not gzip at all'])
def test_a_corrupt_gzip_file_is_one_clear_error_naming_it(tmp_path, damage):
  data = gz(HEADER + good(2000))
  content = {'truncated': data[:len(data) // 2], 'a flipped byte': flipped(data),
             'not gzip at all': HEADER + good(3)}[damage]
  with pytest.raises(checks.CsvFormatError,
                     match=r'data/broken\.csv\.gz: not a readable gzip file') as error:
    run(tmp_path, {'good.csv': HEADER + good(3, 5000), 'broken.csv.gz': content})
  assert len(str(error.value).splitlines()) == 1


@pytest.mark.parametrize('where', ['local', 'ram://'])
def test_every_read_of_an_input_file_goes_through_open_input(tmp_path, where):
  """Header, whole text and both block readers agree for plain and gzip files,
  local or on TF's filesystems (ram:// stands in for gs://)."""
  from tfx.dsl.io import fileio  # pylint: disable=g-import-not-at-top
  text = (HEADER + good(3) + BAD_ROWS['unbalanced quote'][0] + good(2, 3)).encode()
  base = str(tmp_path) if where == 'local' else f'ram://{tmp_path.name}'
  read = {}
  for name, content in (('c.csv', text), ('c.csv.gz', gz(text))):
    path = f'{base}/{name}'
    with fileio.open(path, 'wb') as f:
      f.write(content)
    header = reader.file_header(path)
    with pytest.raises(reader._NeedsScan):  # pylint: disable=protected-access
      list(reader.checked_blocks(path, header))
    scanned = list(reader.scanned_blocks(path, header))
    read[name] = (reader.read_first_line(path), reader.read_bytes(path), header.columns,
                  [b.num_rows for b, _, _ in scanned], [l for _, lines, _ in scanned for l in lines],
                  [p.line for _, _, problems in scanned for p in problems])
  assert read['c.csv.gz'] == read['c.csv']
  assert read['c.csv'][:2] == (HEADER.encode(), text)
  assert read['c.csv'][3:] == ([5], [2, 3, 4, 6, 7], [5])
  good_text = (HEADER + good(3)).encode()
  with fileio.open(f'{base}/ok.csv.gz', 'wb') as f:
    f.write(gz(good_text))
  header = reader.file_header(f'{base}/ok.csv.gz')
  assert sum(b.num_rows for b in reader.checked_blocks(f'{base}/ok.csv.gz', header)) == 3
