"""The Pusher executor (pipeline/components/pusher.py): TFX's own tests pass
against it; a version appears in the serving directory only whole (one rename
locally; on a file system without directory rename, `saved_model.pb` last);
a push that fails or dies halfway leaves the previous version serving and
nothing that grows. The SIGKILL of a real run's push is tests/test_publish.py's.
"""

import errno
import json
import os

import pytest
from tfx.components.pusher import executor_test as tfx_executor_test
from tfx.dsl.io import filesystem_registry
from tfx.dsl.io.plugins import local
from tfx.types import standard_artifacts, standard_component_specs

from pipeline.components import pusher

MODEL_FILES = {   # a SavedModel's layout; the Pusher copies bytes, it does not parse them
    'saved_model.pb': b'graph',
    'fingerprint.pb': b'fingerprint-1',
    'keras_metadata.pb': b'keras',
    'variables/variables.index': b'index',
    'variables/variables.data-00000-of-00001': b'weights' * 1000,
    'assets/vocab.txt': b'a\nb\n',
}


def write_model(path, fingerprint=b'fingerprint-1'):
  for name, data in dict(MODEL_FILES, **{'fingerprint.pb': fingerprint}).items():
    os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
    with open(os.path.join(path, name), 'wb') as f:
      f.write(data)
  return str(path)


def tree(path):
  """Every file under `path` with its bytes, by relative path."""
  found = {}
  for directory, _, names in os.walk(path):
    for name in names:
      with open(os.path.join(directory, name), 'rb') as f:
        found[os.path.relpath(os.path.join(directory, name), path)] = f.read()
  return found


def whole(path, model):
  return tree(path) == tree(model)


@pytest.mark.parametrize('name', sorted(n for n in dir(tfx_executor_test.ExecutorTest)
                                        if n.startswith('test')))
def test_tfx_pusher_tests_pass_against_ours(monkeypatch, name):
  monkeypatch.setattr(tfx_executor_test.executor, 'Executor', pusher.Executor)
  result = tfx_executor_test.ExecutorTest(name).run()
  assert result.wasSuccessful(), result.errors + result.failures


def version_100_and_another_model(tmp_path):
  """A serving directory whose version 100 is one model, and a second model."""
  base, first = str(tmp_path / 'serving'), write_model(tmp_path / 'm1')
  pusher.push_whole(first, base, '100')
  return base, first, write_model(tmp_path / 'm2', fingerprint=b'fingerprint-2')


def test_a_server_polling_the_directory_only_ever_sees_whole_versions(tmp_path, monkeypatch):
  """After every file the push writes, each numbered directory is a whole model."""
  base, first, second = version_100_and_another_model(tmp_path)
  seen, copy = [], pusher.copy_file

  def copy_then_look(source, target):
    copy(source, target)
    seen.append({v: whole(os.path.join(base, v), first if v == '100' else second)
                 for v in pusher.versions(base)})
  monkeypatch.setattr(pusher, 'copy_file', copy_then_look)
  assert pusher.push_whole(second, base, '101') == os.path.join(base, '101')
  assert len(seen) == len(MODEL_FILES)
  assert all(s == {'100': True} for s in seen)          # 101 was not there while copied
  assert pusher.versions(base) == ['100', '101'] and whole(os.path.join(base, '101'), second)
  assert sorted(os.listdir(base)) == ['100', '101']


def test_a_push_that_fails_midway_leaves_the_previous_version_and_no_staging(tmp_path, monkeypatch):
  base, first, second = version_100_and_another_model(tmp_path)
  calls, copy = [], pusher.copy_file

  def fill_the_disk(source, target):
    calls.append(target)
    if len(calls) == 3:
      raise OSError(errno.ENOSPC, 'No space left on device', target)
    copy(source, target)
  monkeypatch.setattr(pusher, 'copy_file', fill_the_disk)
  with pytest.raises(OSError, match='No space left'):
    pusher.push_whole(second, base, '101')
  assert sorted(os.listdir(base)) == ['100'] and whole(os.path.join(base, '100'), first)
  assert pusher.newest_version(base) == '100'


def test_leftovers_of_a_killed_push_are_found_and_removed_and_versions_kept(tmp_path):
  base, model = str(tmp_path / 'serving'), write_model(tmp_path / 'm1')
  pusher.push_whole(model, base, '100')
  os.makedirs(os.path.join(base, pusher.STAGING_PREFIX + '101', 'variables'))
  os.makedirs(os.path.join(base, '102', 'variables'))     # a GCS push that died before its .pb
  assert [os.path.basename(p) for p in pusher.leftovers(base)] == [
      pusher.STAGING_PREFIX + '101', '102']
  pusher.remove_leftovers(base)
  assert os.listdir(base) == ['100'] and pusher.leftovers(base) == []


def test_a_new_version_is_newer_than_the_newest_even_within_one_second(tmp_path):
  base = str(tmp_path)
  assert pusher.next_version(base, now=1000.7) == '1000'
  os.makedirs(os.path.join(base, '1000'))
  assert pusher.next_version(base, now=1000.9) == '1001'
  assert pusher.next_version(base, now=2000) == '2000'


class RecordingObjectStore(local.LocalFilesystem):
  """gs:// kept in a local directory, recording each write and rename: a file
  system without directory rename, as GCS is, that says in which order the
  files of a push arrived."""

  SUPPORTED_SCHEMES = ['gs://']
  root, log = '', []

  @classmethod
  def local(cls, path):
    return os.path.join(cls.root, path[len('gs://'):]) if path.startswith('gs://') else path

  @staticmethod
  def open(name, mode='r'):
    if 'w' in mode:
      RecordingObjectStore.log.append(('write', name))
    return local.LocalFilesystem.open(RecordingObjectStore.local(name), mode)

  @staticmethod
  def copy(src, dst, overwrite=False):
    RecordingObjectStore.log.append(('write', dst))
    local.LocalFilesystem.copy(RecordingObjectStore.local(src), RecordingObjectStore.local(dst),
                               overwrite)

  @staticmethod
  def rename(src, dst, overwrite=False):
    RecordingObjectStore.log.append(('rename', dst))
    local.LocalFilesystem.rename(RecordingObjectStore.local(src), RecordingObjectStore.local(dst),
                                 overwrite)

  @staticmethod
  def walk(top, topdown=True, onerror=None):
    for directory, dirs, names in local.LocalFilesystem.walk(RecordingObjectStore.local(top)):
      yield 'gs://' + os.path.relpath(directory, RecordingObjectStore.root), dirs, names


for _name in ('exists', 'glob', 'isdir', 'listdir', 'makedirs', 'mkdir', 'remove', 'rmtree', 'stat'):
  setattr(RecordingObjectStore, _name, staticmethod(
      lambda path, _f=getattr(local.LocalFilesystem, _name): _f(RecordingObjectStore.local(path))))


@pytest.fixture
def object_store(tmp_path, monkeypatch):
  registry = filesystem_registry.DEFAULT_FILESYSTEM_REGISTRY
  monkeypatch.setitem(registry._preferred_filesystem_by_scheme, 'gs://', RecordingObjectStore)  # pylint: disable=protected-access
  monkeypatch.setattr(RecordingObjectStore, 'root', str(tmp_path / 'bucket-store'))
  monkeypatch.setattr(RecordingObjectStore, 'log', [])
  (tmp_path / 'bucket-store').mkdir()
  return RecordingObjectStore


def test_on_gcs_every_file_comes_first_and_saved_model_pb_last(tmp_path, object_store):
  model = write_model(tmp_path / 'm1')
  path = pusher.push_whole(model, 'gs://bucket/serving', '100')
  assert path == 'gs://bucket/serving/100'
  kinds = [kind for kind, _ in object_store.log]
  written = [os.path.relpath(p, path) for _, p in object_store.log]
  assert 'rename' not in kinds                     # no directory rename on an object store
  assert sorted(written) == sorted(MODEL_FILES) and written[-1] == 'saved_model.pb'
  assert whole(object_store.local(path), model)


def test_on_gcs_a_push_killed_before_its_last_file_is_never_a_version(tmp_path, object_store,
                                                                     monkeypatch):
  base, model = 'gs://bucket/serving', write_model(tmp_path / 'm1')
  copy = pusher.copy_file

  def die_before_the_pb(source, target):
    if target.endswith('saved_model.pb'):
      raise KeyboardInterrupt   # as good as a kill: nothing after it runs
    copy(source, target)
  monkeypatch.setattr(pusher, 'copy_file', die_before_the_pb)
  with pytest.raises(KeyboardInterrupt):
    pusher.push_whole(model, base, '100')
  assert pusher.leftovers(base) == [base + '/100']  # no saved_model.pb: no server loads it
  monkeypatch.setattr(pusher, 'copy_file', copy)
  pusher.remove_leftovers(base)
  pusher.push_whole(model, base, '101')
  assert pusher.versions(base) == ['101'] and whole(object_store.local(base + '/101'), model)


def test_the_executor_pushes_a_new_model_whole_and_the_same_model_once(tmp_path):
  base = str(tmp_path / 'serving')
  os.makedirs(os.path.join(base, pusher.STAGING_PREFIX + '5'))   # a killed push's leftover
  executor = pusher.Executor()
  blessing = standard_artifacts.ModelBlessing()
  blessing.uri = str(tmp_path / 'blessing')
  blessing.set_int_custom_property('blessed', 1)
  pushed = []
  for i, fingerprint in enumerate((b'one', b'one', b'two')):
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / f'model{i}')
    write_model(os.path.join(model.uri, 'Format-Serving'), fingerprint)
    push = standard_artifacts.PushedModel()
    push.uri = str(tmp_path / f'push{i}')
    executor.Do({standard_component_specs.MODEL_KEY: [model],
                 standard_component_specs.MODEL_BLESSING_KEY: [blessing]},
                {standard_component_specs.PUSHED_MODEL_KEY: [push]},
                {standard_component_specs.PUSH_DESTINATION_KEY: json.dumps(
                    {'filesystem': {'base_directory': base}})})
    pushed.append(push.get_string_custom_property('pushed_version'))
  assert pushed[0] == pushed[1] != pushed[2]
  assert sorted(os.listdir(base)) == sorted(pushed[1:])           # the leftover is gone
  assert tree(os.path.join(base, pushed[2]))['fingerprint.pb'] == b'two'
