"""The one reader of caption CSVs: pyarrow for speed, Python's csv module for
the files that need it, and the checks of `checks` on both.

Files are read twice as fast as they are parsed: pyarrow parses a file in
C++ and vectorised checks look for anything suspicious; only a file with a
problem is re-read row by row (`checks.scan_rows`), which knows line numbers
and can resynchronise after an unbalanced quote. The first pass over the
input (`summarise_file`, `make_plan`) also infers each column's type exactly
as TFX's CsvExampleGen does (INT -> FLOAT -> STRING) and finds caption ids
repeated across files. `caption_rows` gives the checked rows of one file as
dicts, for the image stage's standalone command. Every read of an input file
goes through `open_input`: a name ending in .gz is gzip-compressed CSV,
decompressed as it is read, with the same checks and line numbers.
"""

import contextlib
import dataclasses
import io
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import csv as pa_csv
from tfx.dsl.io import fileio
from tfx_bsl.coders import csv_decoder

from modules import features
from pipeline.csv_input import checks

ColumnType = csv_decoder.ColumnType
CsvFormatError = checks.CsvFormatError
Problem = checks.Problem
_BLOCK_BYTES = 16 << 20  # local files stream in blocks of this size
_ROWS_PER_BATCH = 50_000   # rows per batch when a file is read row by row


class _NeedsScan(Exception):
  """The vectorised checks found something: read this file row by row."""


GZIP_SUFFIX = '.gz'   # gzip-compressed CSV, as exports often come; read transparently


def is_gzip(path: str) -> bool:
  return path.lower().endswith(GZIP_SUFFIX)


class _RemoteFile(io.RawIOBase):
  """A file of TF's filesystems (gs:// etc.) as a stream pyarrow reads block
  by block: TF's GFile lacks the file methods pyarrow asks for."""

  def __init__(self, path: str):
    super().__init__()
    self._file = fileio.open(path, 'rb')

  def readable(self) -> bool:
    return True

  def seekable(self) -> bool:
    return True

  def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
    self._file.seek(offset, whence)
    return self._file.tell()

  def tell(self) -> int:
    return self._file.tell()

  def readinto(self, buffer) -> int:
    data = self._file.read(len(buffer))
    buffer[:len(data)] = data
    return len(data)

  def close(self) -> None:
    if not self.closed:
      self._file.close()
    super().close()


@contextlib.contextmanager
def open_input(path: str) -> Iterator[pa.NativeFile]:
  """An input file as a stream of its CSV text: the one place that decides
  how an input file is opened. A name ending in .gz means gzip-compressed
  CSV, decompressed as it is read, so line numbers count lines of the CSV
  text whether the file is compressed or not; a .gz file that does not
  decompress is one CsvFormatError naming it, not a decompressor's trace."""
  raw = pa.PythonFile(_RemoteFile(path), mode='r') if '://' in path else pa.OSFile(path)
  try:
    with (pa.CompressedInputStream(raw, 'gzip') if is_gzip(path) else raw) as stream:
      yield stream
  except OSError as error:
    if not is_gzip(path):
      raise
    raise CsvFormatError(f'{path}: not a readable gzip file ({error}); '
                         f'a name ending in {GZIP_SUFFIX} means gzip-compressed CSV') from None
  finally:
    raw.close()


def read_bytes(path: str) -> bytes:
  """A whole input file's CSV text (open_input)."""
  with open_input(path) as f:
    return f.read()


def read_first_line(path: str) -> bytes:
  """The first line of a file's CSV text, without reading the rest."""
  with open_input(path) as f:
    return io.BufferedReader(f).readline()


def file_header(path: str) -> Optional[checks.Header]:
  """The file's columns (checks.parse_header); None for an empty file."""
  return checks.parse_header(path, read_first_line(path))


def checked_blocks(path: str, header: checks.Header) -> Iterator[pa.RecordBatch]:
  """Record batches of one file, every column as UTF-8 text ('' when empty),
  parsed by pyarrow; raises _NeedsScan at the first sign of a bad row."""
  invalid = []
  def on_invalid_row(row):
    invalid.append(row)
    return 'skip'
  options = dict(
      read_options=pa_csv.ReadOptions(column_names=header.columns,
                                      skip_rows=1 if header.has_header else 0,
                                      block_size=_BLOCK_BYTES, use_threads=False),
      parse_options=pa_csv.ParseOptions(newlines_in_values=True, ignore_empty_lines=True,
                                        invalid_row_handler=on_invalid_row),
      convert_options=pa_csv.ConvertOptions(
          column_types={c: pa.binary() for c in header.columns}, strings_can_be_null=False,
          quoted_strings_can_be_null=False))
  try:
    with open_input(path) as source:
      for block in pa_csv.open_csv(source, **options):
        if invalid:
          raise _NeedsScan()
        text = pa.RecordBatch.from_arrays([c.cast(pa.string()) for c in block.columns],
                                          header.columns)   # raises on bytes that are not UTF-8
        if checks.block_needs_scan(text, header.columns):
          raise _NeedsScan()
        yield text
    if invalid:
      raise _NeedsScan()
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    raise _NeedsScan() from None


def scanned_blocks(path: str, header: checks.Header
                   ) -> Iterator[Tuple[pa.RecordBatch, List[int], List[Problem]]]:
  """The good rows of one file read row by row (checks.scan_rows), in
  batches, with each row's line number and the problems found on the way."""
  data = read_bytes(path)
  rows, lines, problems = [], [], []
  def batch():
    columns = [pa.array(list(c), pa.string()) for c in zip(*rows)] if rows else [
        pa.array([], pa.string()) for _ in header.columns]
    return pa.RecordBatch.from_arrays(columns, header.columns), lines, problems
  for line, fields, found in checks.scan_rows(path, data, header):
    problems.extend(found)
    if fields is not None:
      rows.append(fields)
      lines.append(line)
    if len(rows) >= _ROWS_PER_BATCH:
      yield batch()
      rows, lines, problems = [], [], []
  if rows or problems:
    yield batch()


@dataclasses.dataclass
class FileSummary:
  """What the first pass learnt about one input file."""
  index: int
  path: str
  header: Optional[checks.Header]   # None: empty file
  types: Dict[str, int]
  ids: np.ndarray                      # caption ids of the good rows, in order
  scan: bool                           # read row by row (it has problems)


def caption_ids(block: pa.RecordBatch, columns: Sequence[str], scanned: bool) -> np.ndarray:
  """The caption ids of a block of checked rows. Rows read one by one may
  hold ids like ' 12' or '+5' that Python's int() reads and pyarrow's cast
  does not."""
  ids = block.column(list(columns).index(features.CAPTION_ID_KEY))
  if scanned:
    return np.asarray([int(v) for v in ids.to_pylist()], np.int64)
  return ids.cast(pa.int64()).to_numpy()


def summarise_file(index: int, path: str) -> FileSummary:
  """First pass over one file: header, checks, TFX column types, caption ids."""
  header = file_header(path)
  if header is None:
    return FileSummary(index, path, None, {}, np.zeros(0, np.int64), False)
  def summary(blocks, scanned):
    ids = []
    def collect_ids(blocks):
      for block in blocks:
        ids.append(caption_ids(block, header.columns, scanned))
        yield block
    types = infer_types(collect_ids(blocks), header.columns)
    return FileSummary(index, path, header, types,
                       np.concatenate(ids) if ids else np.zeros(0, np.int64), scanned)
  try:
    return summary(checked_blocks(path, header), False)
  except _NeedsScan:
    return summary((b for b, _, _ in scanned_blocks(path, header)), True)


@dataclasses.dataclass
class Plan:
  """The whole input as the second pass needs it."""
  columns: List[str]
  types: Dict[str, int]
  duplicates: Dict[int, Tuple[int, int]]   # caption id -> (file, position) kept
  files: Dict[int, FileSummary]


def make_plan(summaries: Iterable[FileSummary]) -> Plan:
  """Checks that every file has the same columns, unifies their types and
  finds duplicate caption ids across files (the first occurrence is kept)."""
  summaries = sorted(summaries, key=lambda s: s.index)
  with_rows = [s for s in summaries if s.header is not None]
  if not with_rows:
    raise CsvFormatError(f'every input file is empty: {", ".join(s.path for s in summaries)}')
  first = with_rows[0]
  for other in with_rows[1:]:
    if other.header.columns != first.header.columns:
      raise CsvFormatError(
          f'{other.path}:1: columns {",".join(other.header.columns)} differ from '
          f'{",".join(first.header.columns)} in {first.path}')
  return Plan(columns=first.header.columns,
              types=unify_types(s.types for s in with_rows),
              duplicates=checks.duplicates([s.ids for s in summaries]),
              files={s.index: s for s in summaries})


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


def infer_types(blocks: Iterable[pa.RecordBatch], columns: Sequence[str]) -> Dict[str, int]:
  """TFX's per-column type inference (csv_decoder._InferValueType), exactly:
  each non-empty value votes INT < FLOAT < STRING, the highest wins."""
  found = {c: ColumnType.UNKNOWN for c in columns}
  for block in blocks:
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


def caption_rows(path: str, data: bytes) -> Iterator[Tuple[int, Optional[Dict[str, str]],
                                                         List[Problem]]]:
  """(line, row as a dict or None, problems) for every row of one file's
  bytes, with the header repairs and row checks of the ExampleGen executor."""
  header = checks.parse_header(path, data.split(b'\n', 1)[0])
  if header is None:
    return
  yield 1, None, list(header.problems)
  for line, fields, problems in checks.scan_rows(path, data, header):
    yield line, (dict(zip(header.columns, fields)) if fields is not None else None), problems
