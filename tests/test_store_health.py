"""A damaged or busy ML Metadata store (pipeline/artifacts/store_health.py):
truncated, not SQLite, or write-locked by another process. Each is one line
saying which and what to do, from the checks and from a real local_runner.py
run, and nothing under the pipeline root is touched.
"""

import os
import subprocess
import sys
import time

import pytest
from ml_metadata import metadata_store

from pipeline.artifacts import metadata, store_health
from tests.conftest import DATA_ROOT, file_tree, run_local, settings_of


def new_store(path):
  """A real ML Metadata store with its schema, as a first run creates it."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  metadata_store.MetadataStore(metadata.connection_config(path))
  assert os.path.getsize(path) > 4096
  return path


def tree(path):
  """Every file under `path`: its hash and its modification time."""
  mtimes = {rel: os.stat(os.path.join(path, rel)).st_mtime_ns for rel in file_tree(path)}
  return file_tree(path), mtimes


def truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def not_sqlite(path):
  with open(path, 'wb') as f:
    f.write(b'{"this": "is a JSON file, not a database"}\n')


def test_a_new_or_missing_store_is_fine(tmp_path):
  store_health.check(str(tmp_path / 'absent.db'))
  store_health.check(new_store(str(tmp_path / 'm' / 'metadata.db')))


@pytest.mark.parametrize('damage, why', [
    (truncate, 'truncated: '), (not_sqlite, "not an SQLite database: its first bytes are b'{\"this\"")])
def test_damage_is_named(tmp_path, damage, why):
  path = new_store(str(tmp_path / 'metadata.db'))
  damage(path)
  with pytest.raises(store_health.StoreUnusable, match='is damaged') as raised:
    store_health.check(path)
  assert why in str(raised.value) and f'mv {path} {path}.damaged' in str(raised.value)


def test_damage_inside_a_whole_file_is_found_by_sqlites_check(tmp_path):
  path = new_store(str(tmp_path / 'metadata.db'))
  with open(path, 'r+b') as f:   # the second page (a table's b-tree) overwritten
    f.seek(4096)
    f.write(b'\xff' * 4096)
  with pytest.raises(store_health.StoreUnusable, match='is damaged'):
    store_health.check(path)


def hold_write_lock(path):
  """Another process holding SQLite's write lock on `path` (a sqlite3 shell
  in the middle of a transaction); returns once it holds it."""
  holder = subprocess.Popen([sys.executable, '-c', (
      'import sqlite3, sys, time\n'
      f'c = sqlite3.connect({path!r}, isolation_level=None)\n'
      'c.execute("BEGIN EXCLUSIVE"); print("locked", flush=True); time.sleep(120)')],
      stdout=subprocess.PIPE, text=True)
  assert holder.stdout.readline().strip() == 'locked'
  return holder


def test_a_write_lock_held_by_another_process_is_named(tmp_path):
  path = new_store(str(tmp_path / 'metadata.db'))
  holder = hold_write_lock(path)
  try:
    started = time.time()
    with pytest.raises(store_health.StoreUnusable, match='is locked by another writer'):
      store_health.check(path, lock_wait=0.5)
    assert time.time() - started < 5
  finally:
    holder.kill()
    holder.wait()
  store_health.check(path, lock_wait=0.5)    # released: usable again


@pytest.mark.slow   # the run waits store_health.LOCK_WAIT_SECONDS for the lock
@pytest.mark.parametrize('fault', ['truncated', 'not SQLite', 'locked'])
def test_a_run_on_a_damaged_or_locked_store_says_so_in_one_line_and_touches_nothing(
    tmp_path, fault):
  env = dict(os.environ, COCO_OUTPUT_DIR=str(tmp_path), COCO_DATA_ROOT=DATA_ROOT)
  settings = settings_of(env)
  path = new_store(settings.run.metadata_file)
  with open(path + '.lock', 'w') as f:
    f.write('4242')   # an earlier run's lock file
  holder = None
  if fault == 'truncated':
    truncate(path)
  elif fault == 'not SQLite':
    not_sqlite(path)
  else:
    holder = hold_write_lock(path)
  before = tree(settings.run.pipeline_root)
  try:
    result = run_local(env)
  finally:
    if holder:
      holder.kill()
      holder.wait()
  assert result.returncode == 1 and result.stdout == ''
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith(f'error: ML Metadata store {path} is '
                         + ('locked by another writer' if holder else 'damaged')), line
  assert 'Nothing was changed' in line or 'nothing was changed' in line
  assert tree(settings.run.pipeline_root) == before
