"""Shared fixtures: the shared data sets and one pipeline run for all e2e tests."""

import csv
import glob
import hashlib
import os
import subprocess
import sys
from typing import Dict, Optional

import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from modules import features  # noqa: E402  (first: sets TF_USE_LEGACY_KERAS)
from pipeline.settings import PROJECT_DIR, Settings  # noqa: E402

SHARED_DATA = os.path.abspath(os.path.join(PROJECT_DIR, '..', 'shared', 'data'))
VAL2017 = os.path.join(SHARED_DATA, 'coco', 'captions_val2017.json')
# The tests' small sample (1,251 captions of 250 images and the Beam docs' two
# rows): data/ ships the whole val2017 captions for `make run`.
DATA_ROOT = os.path.join(PROJECT_DIR, 'tests', 'data', 'captions')
# Few steps: the e2e tests check wiring, caching and export, not quality
# (bench/quality.py measures that on the full val2017 captions).
E2E_TRAIN_STEPS = 60


def shared_file(path: str) -> str:
  """A file of ../shared/data, or skip with the reason."""
  if not os.path.exists(path):
    pytest.skip(f'{path} is absent (the shared data sets live in ../shared/data)')
  return path


def csv_rows(data_root: str) -> list:
  """Every caption row of the data files as dicts (a file may lack its header
  row, like the Beam docs' example; the pipeline reads it with CSV_COLUMNS)."""
  rows = []
  for path in sorted(glob.glob(os.path.join(data_root, '*'))):
    with open(path, newline='', encoding='utf-8') as f:
      records = list(csv.reader(f))
    if records and features.CAPTION_KEY not in records[0]:
      records.insert(0, list(features.RAW_COLUMNS))
    rows += [dict(zip(records[0], r)) for r in records[1:]]
  return rows


def file_tree(path: str) -> Dict[str, str]:
  """Every file under `path` with its SHA-256, by relative path: what
  "unchanged byte for byte" compares."""
  found = {}
  for root, _, names in os.walk(path):
    for name in names:
      full = os.path.join(root, name)
      with open(full, 'rb') as f:
        found[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
  return found


def run_local(env, timeout: int = 900) -> subprocess.CompletedProcess:
  """Runs local_runner.py in a fresh process, as a user would."""
  return subprocess.run([sys.executable, os.path.join(PROJECT_DIR, 'local_runner.py')],
                        env=env, capture_output=True, text=True, timeout=timeout,
                        cwd=PROJECT_DIR)


def settings_of(env) -> Settings:
  """The settings a run with this environment sees (its paths, its data)."""
  return Settings.from_env(env)


class PipelineRun:
  """Two runs of the default pipeline on data/: a cold one and a cached one."""

  def __init__(self, output_dir: str):
    self.output_dir = output_dir
    self.env = dict(os.environ, COCO_OUTPUT_DIR=output_dir, COCO_DATA_ROOT=DATA_ROOT,
                    COCO_IMAGES='0',
                    COCO_TRAIN_STEPS=str(E2E_TRAIN_STEPS), COCO_STEPS_PER_EPOCH='30',
                    COCO_REPORT='1')  # the HTML report too (tests/test_report.py)
    settings = settings_of(self.env)
    self.pipeline_root = settings.run.pipeline_root
    self.metadata_path = settings.run.metadata_file
    self.data_root = settings.run.data_root
    self.first = run_local(self.env)
    self.second = run_local(self.env) if self.first.returncode == 0 else None

  def check(self):
    for name, result in (('first', self.first), ('second', self.second)):
      assert result is not None and result.returncode == 0, (
          f'{name} run failed:\n{result.stdout if result else ""}\n{result.stderr if result else ""}')


@pytest.fixture(scope='session')
def pipeline_run(tmp_path_factory) -> PipelineRun:
  run = PipelineRun(str(tmp_path_factory.mktemp('e2e')))
  run.check()
  return run


# The default DAG's nodes, in order (tests/test_pipeline.py checks the pipeline builds these).
# The resolver has no upstream node, so TFX's topological order puts it second.
RESOLVER = 'latest_blessed_model_resolver'
COMPONENTS = ['CsvExampleGen', RESOLVER, 'StatisticsGen', 'SchemaGen', 'ExampleValidator',
              'Transform', 'Trainer', 'Evaluator', 'Pusher']


# ------------------------------------------------------------------ two workers (pytest-xdist)
# `make test` runs on two workers (`-n 2 --dist loadgroup`). A session or module
# fixture of ours is a pipeline run or a rehearsal that several tests read, so
# every test that uses one goes to the same worker (an xdist group) and the run
# happens once. Groups start longest first, so the two workers end together;
# the list is ordered by measured seconds (bench/results/test-suite-*.md).
# pipeline_run's group holds the Flink cluster's tests too (they compare with it).
LONGEST_FIRST = ('pipeline_run', 'tests/test_rehearsal.py', 'tests/test_publish.py',
                 'tests/test_distributed.py', 'tests/test_evaluation.py', 'tests/test_kubeflow.py',
                 'tests/test_images.py')


def shared_fixtures(item):
  """(session fixtures, module fixtures) of ours that `item` uses; a module
  fixture as (its module, its name)."""
  sessions, modules = [], []
  for name in item.fixturenames:
    definitions = item._fixtureinfo.name2fixturedefs.get(name)  # pylint: disable=protected-access
    if not definitions or not definitions[-1].func.__module__.startswith('tests.'):
      continue
    if definitions[-1].scope == 'session':
      sessions.append(name)
    elif definitions[-1].scope == 'module':
      modules.append((item.nodeid.split('::')[0], name))
  return sessions, modules


def shared_fixture_groups(items) -> Dict[str, Optional[str]]:
  """The group each test must run in (by node id), or None if it shares
  nothing: a session fixture of ours by its name (it may span modules), else
  the module of a module-scoped one. A module fixture that some test uses
  together with a session fixture goes with that session fixture's group, so
  every user of it is on one worker (else a second worker would set it up,
  and tear it down, while the first one still uses it)."""
  used = {item.nodeid: shared_fixtures(item) for item in items}
  joined = {module: sessions[0] for sessions, modules in used.values() if sessions
            for module in modules}
  groups = {}
  for nodeid, (sessions, modules) in used.items():
    if sessions:
      groups[nodeid] = sessions[0]
    elif modules:
      groups[nodeid] = next((joined[m] for m in modules if m in joined), modules[0][0])
    else:
      groups[nodeid] = None
  return groups


@pytest.hookimpl(tryfirst=True)   # before xdist reads the groups from the markers
def pytest_collection_modifyitems(config, items):
  groups = shared_fixture_groups(items)
  for item in items:
    if groups[item.nodeid]:
      item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))
  rank = lambda item: (LONGEST_FIRST.index(groups[item.nodeid])
                       if groups[item.nodeid] in LONGEST_FIRST else len(LONGEST_FIRST))
  items.sort(key=rank)   # stable: within a group, the file's own order
