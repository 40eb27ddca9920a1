"""The settings object (the one reader of the environment), the README's
settings table, and the package layering it rests on."""

import ast
import dataclasses
import glob
import os
import re

import pytest

from pipeline import settings
from pipeline.settings import Settings, SettingsError

README = os.path.join(settings.PROJECT_DIR, 'README.md')
GCP_DOC = os.path.join(settings.PROJECT_DIR, 'docs', 'gcp.md')


def table_rows(path):
  """`| `COCO_X` | default | what |` rows of a markdown file -> {variable: default}."""
  rows = {}
  with open(path, encoding='utf-8') as f:
    for line in f:
      match = re.match(r'^\|\s*`(COCO_[A-Z0-9_]+)`\s*\|\s*([^|]*?)\s*\|', line)
      if match:
        rows[match.group(1)] = match.group(2).strip('`')
  return rows


def test_defaults_without_environment():
  s = Settings.from_env({})
  assert s == Settings()
  assert s.run.data_root == os.path.join(settings.PROJECT_DIR, 'data', 'captions')
  assert s.run.pipeline_root == os.path.join(settings.PROJECT_DIR, 'tfx_pipeline_output',
                                             'coco-captions')
  assert s.run.metadata_file == os.path.join(s.run.pipeline_root, 'metadata.db')
  assert s.beam.mode == 'in_memory' and s.run.cache and not s.images.enabled
  assert s.data.transform_config() == {'vocab_size': 5000, 'max_tokens': 16}
  assert s.trainer.trainer_config()['batch_size'] == 128


def test_values_are_parsed_once_with_one_set_of_parsers():
  s = Settings.from_env({'COCO_CACHE': 'off', 'COCO_IMAGES': 'Yes', 'COCO_TRAIN_STEPS': '12',
                         'COCO_MAX_REJECTED': '0.2', 'COCO_IMAGE_LICENSES': ' a , b ,',
                         'COCO_BEAM_MODE': 'multi_processing', 'COCO_OUTPUT_DIR': 'gs://b/o',
                         'COCO_EVAL_STEPS': ''})
  assert (s.run.cache, s.images.enabled, s.trainer.train_steps) == (False, True, 12)
  assert s.data.max_rejected == 0.2 and s.images.licenses == ('a', 'b')
  assert s.beam.mode == 'multi_processing' and s.trainer.eval_steps is None
  # SQLite cannot live on GCS: a gs:// root keeps its metadata on local disk
  assert s.run.metadata_file.startswith(settings.PROJECT_DIR)
  with pytest.raises(dataclasses.FrozenInstanceError):
    s.run.cache = True


def test_every_malformed_value_is_named_at_once():
  with pytest.raises(SettingsError) as error:
    Settings.from_env({'COCO_TRAIN_STEPS': 'many', 'COCO_IMAGES': 'maybe',
                       'COCO_MAX_REJECTED': '2', 'COCO_BEAM_MODE': 'spark',
                       'COCO_IMAGE_HTTP_TIMEOUT': 'soon', 'COCO_BATCH_SIZE': '0'})
  message = str(error.value)
  for expected in ("COCO_TRAIN_STEPS='many' is not an integer", "COCO_IMAGES='maybe' use 1 or 0",
                   "COCO_MAX_REJECTED='2' is a fraction", "COCO_BEAM_MODE='spark' choose one of",
                   "COCO_IMAGE_HTTP_TIMEOUT='soon' is not a number",
                   "COCO_BATCH_SIZE='0' must be at least 1"):
    assert expected in message


def test_gcp_paths_and_missing_settings_name_their_variables():
  gcp = Settings.from_env({'COCO_GCS_ROOT': 'gs://bucket/coco/'}).gcp
  assert gcp.pipeline_root() == 'gs://bucket/coco/pipeline_root'
  assert gcp.data_root() == 'gs://bucket/coco/data'
  assert gcp.image_location() == 'gs://bucket/coco/images/{folder}'
  with pytest.raises(SettingsError, match='COCO_GCP_PROJECT'):
    gcp.require('project', purpose='x')
  with pytest.raises(SettingsError, match='COCO_GCS_ROOT must be a gs:// path'):
    Settings.from_env({'COCO_GCS_ROOT': 'bucket'}).gcp.pipeline_root()


def test_readme_table_names_every_setting_with_its_default():
  documented = {name: shown for name, shown, _ in settings.documented()}
  assert len(documented) == len(settings.documented())   # no variable twice
  assert table_rows(README) == documented


def test_gcp_guide_agrees_with_the_settings():
  documented = {name: shown for name, shown, _ in settings.documented()}
  rows = table_rows(GCP_DOC)
  assert rows and {k: documented.get(k) for k in rows} == rows


# ------------------------------------------------------------------ layering
def python_files(*folders):
  for folder in folders:
    yield from glob.glob(os.path.join(settings.PROJECT_DIR, folder, '**', '*.py'), recursive=True)


def imported_modules(path):
  tree = ast.parse(open(path, encoding='utf-8').read())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      yield node.module
      yield from (f'{node.module}.{alias.name}' for alias in node.names)


def module_name(path):
  rel = os.path.relpath(path, settings.PROJECT_DIR)[:-3].replace(os.sep, '.')
  return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def test_modules_is_a_leaf():
  for path in python_files('modules'):
    bad = [m for m in imported_modules(path) if m == 'pipeline' or m.startswith('pipeline.')]
    assert not bad, f'{path} imports {bad}: modules/ must not import pipeline/'


def test_no_import_cycles_between_project_modules():
  paths = list(python_files('modules', 'pipeline'))
  names = {module_name(p) for p in paths}
  graph = {module_name(p): {m for m in imported_modules(p) if m in names} - {module_name(p)}
           for p in paths}
  state = {}

  def visit(node, stack):
    state[node] = 'open'
    for nxt in sorted(graph[node]):
      if state.get(nxt) == 'open':
        raise AssertionError(f'import cycle: {" -> ".join(stack + [node, nxt])}')
      if nxt not in state:
        visit(nxt, stack + [node])
    state[node] = 'done'

  for node in sorted(graph):
    if node not in state:
      visit(node, [])


def test_the_environment_is_read_in_one_place():
  """COCO_* variables are read only by pipeline/settings.py, and
  TF_USE_LEGACY_KERAS is set only by modules/__init__.py."""
  for path in list(python_files('modules', 'pipeline', 'tools')) + [
      os.path.join(settings.PROJECT_DIR, f) for f in ('local_runner.py', 'kubeflow_runner.py')]:
    text = open(path, encoding='utf-8').read()
    rel = os.path.relpath(path, settings.PROJECT_DIR)
    if rel != os.path.join('pipeline', 'settings.py'):
      assert not re.search(r"environ(\.get)?\(?\[?\s*['\"]COCO_", text), f'{rel} reads a COCO_ variable'
      assert 'environ.get(ENV_PREFIX' not in text, rel
    if rel != os.path.join('modules', '__init__.py'):
      assert "'TF_USE_LEGACY_KERAS'" not in text, f'{rel} sets TF_USE_LEGACY_KERAS'



LAYERS = [  # lowest first: a module may import its own layer and those before it
    ('modules',),
    ('pipeline.settings',),
    ('pipeline.artifacts',),
    ('pipeline.csv_input',),
    ('pipeline.images',),
    ('pipeline.components',),
    ('pipeline.beam_args', 'pipeline.evaluation', 'pipeline.pipeline'),
    ('pipeline.report',),
    ('pipeline.orchestration',),
    ('pipeline.tools',),
]


def layer_of(name):
  for index, prefixes in enumerate(LAYERS):
    if any(name == p or name.startswith(p + '.') for p in prefixes):
      return index
  return None


def test_packages_import_only_the_layers_below_them():
  """The layering README.md "Layout" and pipeline/__init__.py describe."""
  for path in python_files('modules', 'pipeline'):
    name = module_name(path)
    if name == 'pipeline':
      continue
    own = layer_of(name)
    assert own is not None, f'{name} is in no layer: add it to LAYERS and the README'
    for imported in imported_modules(path):
      other = layer_of(imported)
      assert other is None or other <= own, f'{name} (layer {own}) imports {imported} (layer {other})'
