"""pipeline/orchestration/workers.py: the sdist a run stages for Beam's workers,
built outside the checkout, and the wait for Beam's in-process workers."""

import concurrent.futures
import os
import subprocess
import sys
import tarfile
import threading
import time

import pytest
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.worker import worker_pool_main

from pipeline.orchestration import workers
from pipeline.settings import PROJECT_DIR, Settings


def checkout_state():
  """What `setup.py sdist` run in the checkout changes there: a release tree
  (`coco-captions-tfx-0.1.0/`), build/ and dist/, the egg-info's files."""
  state = {}
  for name in os.listdir(PROJECT_DIR):
    path = os.path.join(PROJECT_DIR, name)
    if name.startswith('coco') or name in ('build', 'dist'):
      state[name] = os.stat(path).st_mtime_ns
    if name.endswith('.egg-info'):
      state.update({f'{name}/{f}': os.stat(os.path.join(path, f)).st_mtime_ns
                    for f in os.listdir(path)})
  return state


def test_builds_at_once_touch_nothing_in_the_checkout_and_each_package_is_whole(tmp_path):
  before = checkout_state()
  shared = str(tmp_path / 'shared' / 'pkg.tar.gz')
  destinations = [shared, shared, str(tmp_path / 'a' / 'pkg.tar.gz'),
                  str(tmp_path / 'b' / 'pkg.tar.gz')]
  with concurrent.futures.ThreadPoolExecutor(len(destinations)) as pool:
    built = list(pool.map(workers.build_package, destinations))
  assert built == destinations
  assert checkout_state() == before
  assert sorted(os.listdir(tmp_path / 'shared')) == ['pkg.tar.gz']   # no partial left behind
  sources = set(workers.checkout_sources())
  assert {'setup.py', 'pipeline/orchestration/workers.py', 'modules/trainer.py'} <= sources
  for path in set(destinations):
    with tarfile.open(path) as tar:
      members = {m.split('/', 1)[1] for m in tar.getnames() if '/' in m}
    assert sources <= members and 'PKG-INFO' in members, sorted(sources - members)


def test_the_package_installs_with_pip_as_a_worker_would(tmp_path):
  package = workers.build_package(str(tmp_path / 'coco-captions-tfx.tar.gz'))
  target = tmp_path / 'site'
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                  '--target', str(target), package], check=True, capture_output=True)
  assert (target / 'pipeline' / 'beam_args.py').is_file()
  assert (target / 'modules' / 'preprocessing.py').is_file()


def test_a_failing_build_names_its_step(tmp_path, monkeypatch):
  monkeypatch.setattr(workers, 'SETUP_FILE', str(tmp_path / 'no_such_setup.py'))
  with pytest.raises(workers.PackageError) as failed:
    workers.build_package(str(tmp_path / 'out' / 'pkg.tar.gz'))
  assert '`setup.py egg_info`' in str(failed.value) and 'no_such_setup.py' in str(failed.value)
  assert not os.path.exists(tmp_path / 'out' / 'pkg.tar.gz')


class FakeHarness:
  """Stands in for Beam's SdkHarness: `run` is the worker's whole life."""

  def __init__(self, *unused_args, release: threading.Event, **unused_kwargs):
    self.release = release

  def run(self):
    self.release.wait()


def start_in_process_worker(monkeypatch, release: threading.Event):
  """Starts a worker thread through Beam's own worker pool (its LOOPBACK
  path), so the thread carries the name Beam gives it."""
  monkeypatch.setattr(worker_pool_main.sdk_worker, 'SdkHarness',
                      lambda *a, **k: FakeHarness(*a, release=release, **k))
  pool = worker_pool_main.BeamFnExternalWorkerPoolServicer()
  response = pool.StartWorker(beam_fn_api_pb2.StartWorkerRequest(worker_id='w1'), None)
  assert not response.error, response.error
  started = [t for t in threading.enumerate() if t.name.startswith(workers.IN_PROCESS_WORKER_THREAD)]
  assert started and all(t.daemon for t in started)
  return started


def test_waits_for_an_in_process_worker_that_is_still_tearing_down(monkeypatch):
  release = threading.Event()
  started = start_in_process_worker(monkeypatch, release)
  threading.Timer(0.5, release.set).start()
  began = time.monotonic()
  assert workers.wait_for_in_process_workers(timeout_s=30)
  assert 0.3 < time.monotonic() - began < 10
  assert not any(t.is_alive() for t in started)


def test_a_worker_that_never_ends_is_given_up_on_after_the_timeout(monkeypatch):
  release = threading.Event()
  start_in_process_worker(monkeypatch, release)
  try:
    began = time.monotonic()
    assert not workers.wait_for_in_process_workers(timeout_s=0.3)
    assert time.monotonic() - began < 5
  finally:
    release.set()


def test_only_the_modes_that_stage_code_build_the_package(tmp_path):
  for mode, extra, built in (('in_memory', {}, False), ('multi_processing', {}, False),
                             ('portable', {'COCO_BEAM_JOB_ENDPOINT': 'h:1'}, True),
                             ('flink', {}, True),
                             ('flink', {'COCO_FLINK_ENVIRONMENT': 'DOCKER'}, False)):
    current = Settings.from_env({'COCO_OUTPUT_DIR': str(tmp_path / mode / str(len(extra))),
                                 'COCO_BEAM_MODE': mode, **extra})
    workers.build_package_if_shipped(current)
    assert os.path.isfile(current.run.worker_package) == built, (mode, extra)
