"""The faults a run names in one line instead of a library's message.

A full disk reaches the runner as whatever the writing library makes of
ENOSPC: TensorFlow's "ResourceExhaustedError: {{function_node
__wrapped__SaveV2...}} <file>; No space left on device", Beam's RuntimeError
with a worker's stack trace inside, SQLite's "database or disk is full",
Python's OSError. The run then says which component, which path, how full
that file system is, and that finished components stay cached. A store that
another writer locked during the run ends MLMD's retries with "Concurrent
writes aborted"; that gets store_health's line.
"""

import errno
import os
import re
import shutil
from typing import Iterator, Optional

from pipeline.artifacts import store_health

NO_SPACE = re.compile(r'no space left on device|database or disk is full|\bENOSPC\b', re.I)
LOCKED = re.compile(r'Concurrent writes aborted|database is locked')
PATH = re.compile(r"(?:^|[\s'\"(=])(/[^\s;:'\"(){}]+)")


def causes(error: BaseException) -> Iterator[BaseException]:
  """The error and what it was raised from or during, outermost first."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def written_path(error: BaseException, text: str) -> Optional[str]:
  """The file a failed write names: OSError's own, else the first absolute
  path in the message near "No space left"."""
  if isinstance(error, OSError) and error.filename:
    return str(error.filename)
  match = NO_SPACE.search(text)
  before = text[:match.start()] if match else text
  found = PATH.findall(before) or PATH.findall(text)
  return found[-1] if found else None


def mount_of(path: str) -> str:
  """The mount point holding `path` (or its nearest existing parent)."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  while not os.path.ismount(path):
    path = os.path.dirname(path)
  return path


def mib(n: int) -> str:
  return f'{n / 2**20:,.1f} MiB'


def no_space_line(error: BaseException, component: Optional[str], fallback: str) -> Optional[str]:
  """One line for a run that filled its disk, or None if it did not."""
  for e in causes(error):
    text = str(e)
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or NO_SPACE.search(text):
      path = written_path(e, text) or fallback
      mount = mount_of(path)
      usage = shutil.disk_usage(mount)
      return (f'{component or "the run"}: no space left on device writing {path} '
              f'(the file system at {mount} has {mib(usage.free)} free of {mib(usage.total)}); '
              'free some space and run again: finished components stay cached.')
  return None


def locked_line(error: BaseException, metadata_file: str) -> Optional[str]:
  """store_health's line for a store another writer locked mid-run, or None."""
  if any(LOCKED.search(str(e)) for e in causes(error)):
    return str(store_health.locked(metadata_file))
  return None


def explain(error: BaseException, component: Optional[str], pipeline_root: str,
            metadata_file: str) -> Optional[str]:
  """The one line for a known fault, or None (then the error's own head)."""
  return no_space_line(error, component, pipeline_root) or locked_line(error, metadata_file)
