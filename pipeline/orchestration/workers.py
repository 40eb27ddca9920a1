"""What a local run does for Beam's workers, before and after the run.

- `build_package`: the sdist of this checkout that the portable and Flink
  modes stage for their workers (`--extra_package`, pipeline/beam_args.py),
  built once per run and outside the checkout. Beam's own `--setup_file` runs
  `setup.py sdist` inside the checkout for every Beam stage, and two runs from
  one checkout at once (two terminals; the test suite's portable and Flink
  runs) then race on its `coco-captions-tfx-0.1.0/` release tree and its
  `*.egg-info`: one fails with `No such file or directory:
  'coco-captions-tfx-0.1.0/pipeline/...'` (2 of 16 runs, two at a time).
- `wait_for_in_process_workers`: Beam's LOOPBACK workers are daemon threads of
  this process, and one may still be tearing a job down in TensorFlow's C++
  when the run has finished. A Python that exits then kills that thread
  inside C++, and the process aborts after a successful run (`terminate
  called after throwing an instance of '5'`, exit -6; 2 of 16 portable runs).
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import List

from pipeline.beam_args import ships_package
from pipeline.settings import PROJECT_DIR, SETUP_FILE, Settings

# Beam names the thread of each in-process SDK worker so
# (apache_beam/runners/worker/worker_pool_main.py, StartWorker).
IN_PROCESS_WORKER_THREAD = 'run_worker_'


class PackageError(RuntimeError):
  """The worker package could not be built; the message says which step and why."""


def _setup_py(args: List[str], cwd: str) -> None:
  """Runs a setup.py command (the checkout's setup.py, or its copy in `cwd`)."""
  result = subprocess.run([sys.executable, os.path.basename(SETUP_FILE), '-q', *args], cwd=cwd,
                          capture_output=True, text=True, check=False)
  if result.returncode:
    tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
    raise PackageError(f'`setup.py {" ".join(args[:1])}` in {cwd} failed: ' + ' / '.join(tail))


def checkout_sources() -> List[str]:
  """The checkout's files that setup.py puts in its sdist (relative paths): the
  SOURCES.txt of an `egg_info --egg-base` written outside the checkout."""
  with tempfile.TemporaryDirectory(prefix='worker-package-egg-') as egg_base:
    _setup_py(['egg_info', '--egg-base', egg_base], cwd=PROJECT_DIR)
    egg_info, = glob.glob(os.path.join(egg_base, '*.egg-info'))
    with open(os.path.join(egg_info, 'SOURCES.txt'), encoding='utf-8') as f:
      lines = [line.strip() for line in f]
  return [line for line in lines if line and not os.path.isabs(line)]


def build_package(destination: str) -> str:
  """Builds the sdist at `destination`, touching nothing in the checkout: the
  files setup.py ships are copied to a temporary directory and built there,
  and the result replaces `destination` atomically (a run staging the old one
  meanwhile reads it whole)."""
  os.makedirs(os.path.dirname(destination), exist_ok=True)
  with tempfile.TemporaryDirectory(prefix='worker-package-') as tmp:
    source, dist = os.path.join(tmp, 'src'), os.path.join(tmp, 'dist')
    for relative in checkout_sources():
      os.makedirs(os.path.dirname(os.path.join(source, relative)), exist_ok=True)
      shutil.copy2(os.path.join(PROJECT_DIR, relative), os.path.join(source, relative))
    _setup_py(['sdist', '--dist-dir', dist], cwd=source)
    built, = glob.glob(os.path.join(dist, '*.tar.gz'))
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(destination), suffix='.partial',
                                     delete=False) as partial:
      with open(built, 'rb') as f:
        shutil.copyfileobj(f, partial)
    os.replace(partial.name, destination)
  return destination


def build_package_if_shipped(settings: Settings) -> None:
  """Builds the run's sdist when its Beam mode stages one (`ships_package`):
  before a run or a Beam job of the images tool."""
  if ships_package(settings.beam):
    build_package(settings.run.worker_package)


def wait_for_in_process_workers(timeout_s: float = 10.0) -> bool:
  """Waits (at most `timeout_s` in all) for Beam's in-process SDK worker
  threads to finish; whether none is left."""
  deadline = time.monotonic() + timeout_s
  found = [t for t in threading.enumerate() if t.name.startswith(IN_PROCESS_WORKER_THREAD)]
  for thread in found:
    thread.join(max(0.0, deadline - time.monotonic()))
  return not any(t.is_alive() for t in found)
