"""Checks and repairs of the input CSVs (run inside the ExampleGen executor,
and by the image stage's standalone command).

Real caption files are messy. Each problem becomes one message naming the
file, the line and the column, and the row is either repaired (when the
repair is obvious; each is listed in README.md "Bad input") or rejected; no
row disappears without a message, and the run reports the counts.

Files are checked twice as fast as they are parsed: pyarrow parses a file
and vectorised checks look for anything suspicious; only a file with a
problem is re-read row by row with Python's csv module, which knows line
numbers and can resynchronise after an unbalanced quote.
"""

import csv
import dataclasses
import re
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from modules import features
from pipeline.artifacts.files import REJECTED, REPAIRED

REQUIRED_COLUMNS = (features.IMAGE_ID_KEY, features.CAPTION_ID_KEY, features.CAPTION_KEY)
INTEGER_COLUMNS = (features.IMAGE_ID_KEY, features.CAPTION_ID_KEY)
# Rows over these limits are rejected.
MAX_CAPTION_CHARS = 1000       # the model reads a few dozen tokens: this is a broken row
MAX_RECORD_LINES = 4           # a quoted field spanning more lines is an unbalanced quote
_INTEGER = re.compile(r'[+-]?[0-9]+')
_NOT_UTF8 = re.compile('[\udc80-\udcff]')   # what surrogateescape makes of bad bytes


class CsvFormatError(ValueError):
  """A CSV problem that stops the run (no row of the file can be trusted)."""


@dataclasses.dataclass(frozen=True)
class Problem:
  path: str
  line: int            # 1-based physical line of the file
  column: str          # column name, or '' for the whole row / file
  message: str
  action: str = REJECTED

  def __str__(self) -> str:
    where = f'{self.path}:{self.line}:' + (f' column {self.column!r}:' if self.column else '')
    return f'{where} {self.message} (row {self.action})' if self.action == REJECTED else (
        f'{where} {self.message} ({self.action})')


@dataclasses.dataclass(frozen=True)
class Header:
  columns: List[str]    # column names to read the rows under
  has_header: bool      # False: the first line is already data
  problems: Tuple[Problem, ...] = ()


def _split_line(line: str) -> List[str]:
  return next(csv.reader([line]), [])


def parse_header(path: str, first_line: bytes) -> Optional[Header]:
  """The file's columns from its first line; None for an empty file.

  Repairs: a UTF-8 byte-order mark and spaces around names are dropped
  (quoted names are read as CSV anyway); a file whose first line is data
  (it has as many fields as the pipeline's columns, and an integer first
  field, like the Beam documentation's two-row example) is read under
  features.RAW_COLUMNS. A missing required column stops the run.
  """
  problems = []
  bom = first_line.startswith(b'\xef\xbb\xbf')
  text = first_line[3 if bom else 0:].decode('utf-8', errors='surrogateescape').rstrip('\r\n')
  if not text.strip():
    return None
  names = [n.strip() for n in _split_line(text)]
  if bom:
    problems.append(Problem(path, 1, names[0], 'byte-order mark before the first name ignored',
                            REPAIRED))
  if (not set(names) & set(REQUIRED_COLUMNS) and len(names) == len(features.RAW_COLUMNS)
      and _INTEGER.fullmatch(names[0])):
    problems.append(Problem(path, 1, '', 'no header row; read the file as '
                            + ','.join(features.RAW_COLUMNS), REPAIRED))
    return Header(list(features.RAW_COLUMNS), False, tuple(problems))
  missing = [c for c in REQUIRED_COLUMNS if c not in names]
  if missing:
    raise CsvFormatError(f'{path}:1: required column {missing[0]!r} is missing '
                         f'(header: {",".join(names)}; required: '
                         f'{",".join(REQUIRED_COLUMNS)})')
  duplicated = sorted({n for n in names if names.count(n) > 1})
  if duplicated:
    raise CsvFormatError(f'{path}:1: column {duplicated[0]!r} appears twice in the header')
  for name in names:
    if name not in features.RAW_COLUMNS:
      problems.append(Problem(path, 1, name, 'extra column kept as a feature '
                              '(the model does not use it)', REPAIRED))
  return Header(names, True, tuple(problems))


def row_problems(path: str, line: int, columns: Sequence[str],
                 fields: Sequence[str]) -> List[Problem]:
  """What is wrong with one parsed row (empty when it is good)."""
  if len(fields) < len(columns):
    return [Problem(path, line, columns[len(fields)], f'missing: the row has {len(fields)} '
                    f'fields, expected {len(columns)} ({",".join(columns)})')]
  if len(fields) > len(columns):
    return [Problem(path, line, f'field {len(columns) + 1}', f'unexpected: the row has '
                    f'{len(fields)} fields, expected {len(columns)} ({",".join(columns)})')]
  found = []
  for name, value in zip(columns, fields):
    bad = _NOT_UTF8.search(value)
    if bad:
      found.append(Problem(path, line, name, f'bytes that are not UTF-8 at character '
                           f'{bad.start() + 1}'))
  if found:
    return found
  row = dict(zip(columns, fields))
  for name in INTEGER_COLUMNS:
    if not _INTEGER.fullmatch(row[name].strip()):
      found.append(Problem(path, line, name, f'{row[name]!r} is not an integer'))
  caption = row[features.CAPTION_KEY]
  if not caption.strip():
    found.append(Problem(path, line, features.CAPTION_KEY, 'empty caption'))
  elif len(caption) > MAX_CAPTION_CHARS:
    found.append(Problem(path, line, features.CAPTION_KEY,
                         f'caption of {len(caption)} characters, over the limit of '
                         f'{MAX_CAPTION_CHARS} (a caption is a sentence; is a quote unbalanced?)'))
  return found


def open_quote_column(line: str, columns: Sequence[str]) -> str:
  """The column whose quoted field is still open at the end of `line`."""
  field, quoted = 0, False
  for char in line.rstrip('\r\n'):
    if char == '"':
      quoted = not quoted
    elif char == ',' and not quoted:
      field += 1
  if not quoted:
    return ''
  return columns[field] if field < len(columns) else f'field {field + 1}'


def scan_rows(path: str, data: bytes, header: Header
              ) -> Iterator[Tuple[int, Optional[List[str]], List[Problem]]]:
  """Every row of a file as (line, fields or None, problems), row by row.

  A quoted field that spans more than MAX_RECORD_LINES lines, or runs
  to the end of the file, or leaves its row with the wrong number of fields,
  is an unbalanced quote: that line is rejected and reading resumes on the
  next line, so the rows the quote swallowed are still read.
  """
  if data.startswith(b'\xef\xbb\xbf'):
    data = data[3:]
  lines = data.decode('utf-8', errors='surrogateescape').splitlines(keepends=True)
  i = 1 if header.has_header else 0
  while i < len(lines):
    i = yield from _rows_from(path, lines, i, header)


def _rows_from(path: str, lines: List[str], i: int, header: Header):
  """scan_rows() from line index i until the end of the file or an
  unbalanced quote; returns the line index to resume from."""
  reader = csv.reader(iter(lines[i:]), strict=True)
  consumed = 0
  while True:
    start = i + consumed + 1
    try:
      fields = next(reader)
    except StopIteration:
      return len(lines)
    except csv.Error as error:
      yield start, None, [Problem(path, start, open_quote_column(lines[start - 1], header.columns),
                                  f'unbalanced quote ({error})')]
      return start
    span, consumed = reader.line_num - consumed, reader.line_num
    if not fields:
      continue  # a blank line, skipped as pyarrow does
    if span > 1 and (span > MAX_RECORD_LINES or len(fields) != len(header.columns)):
      yield start, None, [Problem(path, start, open_quote_column(lines[start - 1], header.columns),
                                  'unbalanced quote: the quoted field opened on this line runs '
                                  f'to line {start + span - 1}')]
      return start
    problems = row_problems(path, start, header.columns, fields)
    yield start, (None if problems else fields), problems


def block_needs_scan(block: pa.RecordBatch, columns: Sequence[str]) -> bool:
  """Vectorised screening of one parsed block of UTF-8 text columns: True
  when any row may have a problem that row_problems() would report."""
  by_name = dict(zip(columns, block.columns))
  for column in block.columns:
    if pc.any(pc.greater_equal(pc.count_substring(column, '\n'),
                               MAX_RECORD_LINES)).as_py():
      return True
  for name in INTEGER_COLUMNS:
    if not pc.all(pc.match_substring_regex(by_name[name], r'^[+-]?[0-9]+$')).as_py():
      return True
  caption = by_name[features.CAPTION_KEY]
  lengths = pc.utf8_length(pc.utf8_trim_whitespace(caption))
  return bool(pc.any(pc.equal(lengths, 0)).as_py()
              or pc.any(pc.greater(pc.utf8_length(caption), MAX_CAPTION_CHARS)).as_py())


def duplicates(ids_per_file: Sequence[np.ndarray]) -> dict:
  """Caption ids that occur more than once: id -> (file index, position) of
  its first occurrence, the one that is kept."""
  if not ids_per_file:
    return {}
  ids = np.concatenate([np.asarray(a, np.int64) for a in ids_per_file])
  files = np.concatenate([np.full(len(a), i, np.int64) for i, a in enumerate(ids_per_file)])
  positions = np.concatenate([np.arange(len(a), dtype=np.int64) for a in ids_per_file])
  unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
  repeated = counts > 1
  return {int(u): (int(files[f]), int(positions[f]))
          for u, f in zip(unique[repeated], first[repeated])}
