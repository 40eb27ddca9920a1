"""Readable console output for local runs.

By default a run prints one line per component (position, name, ran or
cached, seconds, elapsed), the Trainer's per-epoch lines, errors, and a final
summary. Everything else TensorFlow, Beam and absl say is hidden unless
`COCO_VERBOSE=1`. Call `setup()` before TensorFlow is imported so its C++
logging level takes effect.

Subprocesses (the user-module wheel build, pip) write straight to the
process's file descriptors, so `quiet_output()` points fds 1 and 2 at a log
file for the run and keeps the console for the progress lines.
"""

import contextlib
import logging
import os
import re
import sys
import time
import warnings

_RUNNING = re.compile(r'^Component (\S+) is running\.$')
_FINISHED = re.compile(r'^Component (\S+) is finished\.$')
_CACHED = re.compile(r'^A cached execution \d+ is used\.$')
_FAILED = re.compile(r'^Execution \d+ failed\.$')   # the run's own error line follows
_OURS = 'coco_captions'


class ComponentProgress(logging.Handler):
  """Turns LocalDagRunner's log records into one line per component."""

  def __init__(self, total: int = 0, stream=None, verbose: bool = False):
    super().__init__(logging.DEBUG)
    self.total = total
    self.stream = stream or sys.stdout
    self.verbose = verbose
    self.started = time.time()
    self.rows = []          # (component, 'ran'|'cached', seconds)
    self._current = None
    self._t0 = 0.0
    self._cached = False

  @property
  def running(self):
    """The component that started and has not finished (the one a failure is in)."""
    return self._current

  def _write(self, text: str) -> None:
    self.stream.write(text + '\n')
    self.stream.flush()

  def emit(self, record: logging.LogRecord) -> None:
    try:
      message = record.getMessage()
    except Exception:  # pylint: disable=broad-except
      return
    if match := _RUNNING.match(message):
      self._current, self._t0, self._cached = match.group(1), time.time(), False
      if self.stream.isatty():  # live progress; the finish line overwrites it
        self.stream.write(f'[{len(self.rows) + 1}/{self.total or "?"}] {self._current} ...\r')
        self.stream.flush()
    elif _CACHED.match(message):
      self._cached = True
    elif (match := _FINISHED.match(message)) and match.group(1) == self._current:
      seconds = time.time() - self._t0
      state = 'cached' if self._cached else 'ran'
      self.rows.append((self._current, state, seconds))
      self._write(f'[{len(self.rows)}/{self.total or "?"}] {self._current:<16} '
                  f'{state:<6} {seconds:6.1f}s   (elapsed {time.time() - self.started:.0f}s)')
      self._current = None
    elif _FAILED.match(message) and not self.verbose:
      return
    elif record.name.startswith(_OURS) and record.levelno >= logging.INFO:
      self._write(f'      {message}')
    elif self.verbose or record.levelno >= logging.ERROR:
      self._write(f'{record.levelname[0]} {record.name}: {message}')


def quiet_libraries() -> None:
  """Before TensorFlow loads: no TF C++ start-up lines, and none of the
  FutureWarnings Google's client libraries print on import (one per library
  that Python 3.10 is past its end of life, which README "The stack" says
  once, with why 3.10; one about google-cloud-storage < 3, which the lock
  pins for TFX 1.16)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  warnings.filterwarnings('ignore', category=FutureWarning, module=r'google\.')


def setup(verbose: bool = False, total_components: int = 0) -> ComponentProgress:
  """Installs the progress handler on the root logger and quiets the rest."""
  if not verbose:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    os.environ.setdefault('PIP_QUIET', '1')  # TFX pip-installs the user-module wheel
    warnings.filterwarnings('ignore')
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logging.use_python_logging(quiet=True)
  handler = ComponentProgress(total_components, verbose=verbose)
  root = logging.getLogger()
  for old in list(root.handlers):
    root.removeHandler(old)
  root.addHandler(handler)
  root.setLevel(logging.INFO)  # DEBUG from Beam is hundreds of thousands of lines
  for name in ('absl', _OURS):
    logging.getLogger(name).setLevel(logging.INFO)
  if not verbose:
    for noisy in ('tensorflow', 'apache_beam', 'tfx_bsl', 'ml_metadata', 'h5py', 'matplotlib'):
      logging.getLogger(noisy).setLevel(logging.ERROR)
  return handler


@contextlib.contextmanager
def quiet_output(log_path: str, handler: ComponentProgress):
  """Sends everything written to fds 1/2 (ours and subprocesses') to `log_path`
  while `handler` keeps writing to the real console."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  sys.stdout.flush()
  sys.stderr.flush()
  saved_out, saved_err = os.dup(1), os.dup(2)
  console = os.fdopen(os.dup(saved_out), 'w', buffering=1)
  previous_stream, handler.stream = handler.stream, console
  with open(log_path, 'ab') as log_file:
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    try:
      yield console
    finally:
      sys.stdout.flush()
      sys.stderr.flush()
      os.dup2(saved_out, 1)
      os.dup2(saved_err, 2)
      os.close(saved_out)
      os.close(saved_err)
      handler.stream = previous_stream
      console.close()
