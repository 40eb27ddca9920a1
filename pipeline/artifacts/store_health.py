"""Is the ML Metadata store usable? Checked before a run touches anything.

ML Metadata on a damaged SQLite file fails with the SQL of its schema query
("database disk image is malformed query: CREATE TABLE IF NOT EXISTS `Type`
..."), and on a file another process holds a write lock on, it retries for
a minute and then says "Concurrent writes aborted after max number of
retries". Here each case is found with Python's own sqlite3 first, read-only
(a damaged file is never written to), and named with what to do.

Our own runs do not meet here: a second run of this pipeline waits on the run
lock (`metadata.db.lock`, pipeline/orchestration/local.py) before it opens the
store. A lock on the SQLite file itself is someone else's: a sqlite3 shell, a
notebook, another tool holding a transaction open.
"""

import os
import sqlite3

SQLITE_HEADER = b'SQLite format 3\x00'
LOCK_WAIT_SECONDS = 10.0   # MLMD's own transactions last milliseconds


class StoreUnusable(Exception):
  """The store cannot be used as it is; the message says why and what to do."""


def _damaged(path: str, why: str) -> StoreUnusable:
  return StoreUnusable(
      f'ML Metadata store {path} is damaged ({why}); nothing was changed. Move it aside '
      f'(mv {path} {path}.damaged) to start a new store, where every component runs again, '
      'or put back a copy of it.')


def size_in_header(header: bytes) -> int:
  """The file size an SQLite header gives (page size x page count), 0 if
  unknown: how a truncated copy is told from other damage."""
  if len(header) < 32:
    return 0
  page_size = int.from_bytes(header[16:18], 'big')
  page_size = 65536 if page_size == 1 else page_size
  return page_size * int.from_bytes(header[28:32], 'big')


def check(path: str, lock_wait: float = LOCK_WAIT_SECONDS) -> None:
  """Raises StoreUnusable if `path` is not SQLite, is damaged, or another
  process holds a write lock on it. A missing or empty file is a new store."""
  if not os.path.exists(path) or os.path.getsize(path) == 0:
    return
  with open(path, 'rb') as f:
    header = f.read(len(SQLITE_HEADER))
    f.seek(0)
    first_page = f.read(100)
  if header != SQLITE_HEADER:
    raise _damaged(path, f'not an SQLite database: its first bytes are {header!r}')
  expected = size_in_header(first_page)
  if expected and os.path.getsize(path) < expected:
    raise _damaged(path, f'truncated: {os.path.getsize(path):,} bytes of the {expected:,} '
                   'its header gives')
  try:
    reader = sqlite3.connect(f'file:{path}?mode=ro', uri=True, timeout=lock_wait)
    try:
      verdict = reader.execute('PRAGMA quick_check').fetchall()
    finally:
      reader.close()
  except sqlite3.OperationalError as error:
    if 'locked' in str(error):
      raise locked(path) from None
    raise _damaged(path, str(error)) from None
  except sqlite3.DatabaseError as error:
    raise _damaged(path, str(error)) from None
  if verdict != [('ok',)]:
    raise _damaged(path, f'SQLite integrity check: {verdict[0][0]}')
  _check_not_locked(path, lock_wait)


def locked(path: str) -> StoreUnusable:
  return StoreUnusable(
      f'ML Metadata store {path} is locked by another writer (not a run of this pipeline: '
      f'those wait on {path}.lock); close the program holding it (a sqlite3 shell, a notebook) '
      'and run again. Nothing was changed.')


def _check_not_locked(path: str, lock_wait: float) -> None:
  """Takes SQLite's write lock and gives it back at once (writes nothing)."""
  writer = sqlite3.connect(path, timeout=lock_wait, isolation_level=None)
  try:
    writer.execute('BEGIN IMMEDIATE')
    writer.execute('ROLLBACK')
  except sqlite3.OperationalError as error:
    if 'locked' in str(error) or 'busy' in str(error):
      raise locked(path) from None
    raise
  finally:
    writer.close()
