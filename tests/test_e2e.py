"""End to end: local_runner.py on the shipped data/, one shared pair of runs."""

import glob
import json
import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from pipeline.artifacts import metadata
from pipeline.artifacts import files
from tests.conftest import COMPONENTS, DATA_ROOT, RESOLVER, csv_rows

pytestmark = pytest.mark.slow


def read_examples(uri, split):
  files = glob.glob(os.path.join(uri, f'Split-{split}', '*'))
  return [tf.train.Example.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(files, compression_type='GZIP')]


def test_first_run_completes_every_component(pipeline_run):
  store = metadata.open_store(pipeline_run.metadata_path)
  first = metadata.run_ids(store)[0]
  runs = metadata.component_runs(store, first)
  assert [r.component for r in runs] == COMPONENTS
  assert {r.state for r in runs} == {'COMPLETE'}


def test_second_run_is_fully_cached(pipeline_run):
  store = metadata.open_store(pipeline_run.metadata_path)
  second = metadata.run_ids(store)[1]
  # A resolver is not cached: it looks up the latest blessed model every run
  # (none here: the sample's model is not blessed, so Evaluator is cached too).
  assert [(r.component, r.state) for r in metadata.component_runs(store, second)] == [
      (c, 'COMPLETE' if c == RESOLVER else 'CACHED') for c in COMPONENTS]
  assert pipeline_run.second.stdout.count(' cached ') == len(COMPONENTS) - 1


def test_console_shows_one_line_per_component_and_a_summary(pipeline_run):
  out = pipeline_run.first.stdout
  for i, component in enumerate(COMPONENTS, 1):
    assert sum(line.startswith(f'[{i}/{len(COMPONENTS)}] {component} ') for line in out.splitlines()) == 1
  assert 'pipeline root: ' + pipeline_run.pipeline_root in out
  assert 'Format-Serving' in out and 'eval perplexity' in out
  noise = [line for line in (out + pipeline_run.first.stderr).splitlines()
           if 'WARNING' in line or 'Traceback' in line or line.startswith(('W0', 'I0', 'E0'))]
  assert noise == []


def test_every_csv_row_becomes_one_example_split_by_image(pipeline_run):
  rows = csv_rows(DATA_ROOT)
  store = metadata.open_store(pipeline_run.metadata_path)
  (artifact,) = [a for a in store.get_artifacts_by_type('Examples') if '/CsvExampleGen/' in a.uri]
  uri = artifact.uri
  splits = {s: read_examples(uri, s) for s in ('train', 'eval')}
  assert len(splits['train']) + len(splits['eval']) == len(rows)
  # ML Metadata records the input checks: every row read, none rejected, one
  # repair (the Beam docs file's missing header row).
  recorded = {k: v.int_value for k, v in artifact.custom_properties.items()
              if k in ('rows_read', 'rows_rejected', 'repairs')}
  assert recorded == {'rows_read': len(rows), 'rows_rejected': 0, 'repairs': 1}
  assert len(splits['eval']) > 0.2 * len(rows) and len(splits['train']) > 0.5 * len(rows)
  image_ids = {s: {e.features.feature['image_id'].int64_list.value[0] for e in examples}
               for s, examples in splits.items()}
  assert not image_ids['train'] & image_ids['eval']
  ids = sorted(e.features.feature['id'].int64_list.value[0] for ex in splits.values() for e in ex)
  assert ids == sorted(int(r['id']) for r in rows)


def test_metrics_json_next_to_model(pipeline_run):
  store = metadata.open_store(pipeline_run.metadata_path)
  with open(os.path.join(metadata.latest_model_uri(store), 'metrics.json')) as f:
    metrics = json.load(f)
  assert metrics['history'] and metrics['history'][-1]['step'] == metrics['train_steps']
  best = metrics['history'][metrics['best_epoch'] - 1]
  assert best['eval_loss'] == min(h['eval_loss'] for h in metrics['history'])
  if best['eval_captions'] == metrics['num_eval_captions']:
    assert metrics['eval_perplexity'] == best['eval_perplexity']
  unigram = metrics['baselines']['unigram_add_one']
  trigram = metrics['baselines']['kneser_ney_trigram']
  assert 1 < trigram < unigram < metrics['num_classes']
  assert metrics['eval_perplexity'] < unigram


LOAD_WITH_TF_ONLY = textwrap.dedent('''
    import importlib.abc, json, sys
    PROJECT = {'pipeline', 'modules', 'captions_module', 'model', 'preprocessing', 'baselines'}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split('.')[0] in PROJECT:
                raise ImportError('project code must not be needed: ' + name)
    sys.meta_path.insert(0, Block())
    import tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    captions = json.loads(sys.argv[2])
    out = model.signatures['score_captions'](captions=tf.constant(captions))
    example = tf.train.Example(features=tf.train.Features(feature={'caption': tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[captions[0].encode()]))}))
    served = model.signatures['serving_default'](examples=tf.constant([example.SerializeToString()]))
    print(json.dumps({'perplexity': out['perplexity'].numpy().tolist(),
                      'served': served['perplexity'].numpy().tolist()}))
''')


def test_exported_model_scores_real_caption_better_than_shuffled(pipeline_run, tmp_path):
  store = metadata.open_store(pipeline_run.metadata_path)
  model_dir = os.path.join(metadata.latest_model_uri(store), 'Format-Serving')
  real = 'A man riding a wave on top of a surfboard.'
  shuffled = 'surfboard wave of man a riding top on a A.'
  script = tmp_path / 'load.py'
  script.write_text(LOAD_WITH_TF_ONLY)
  result = subprocess.run([sys.executable, '-I', str(script), model_dir, json.dumps([real, shuffled])],
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=300,
                          env=dict(os.environ, PYTHONPATH='', TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr
  scores = json.loads(result.stdout.strip().splitlines()[-1])
  real_ppl, shuffled_ppl = scores['perplexity']
  assert real_ppl < shuffled_ppl
  assert scores['served'][0] == pytest.approx(real_ppl, rel=1e-5)


def test_sample_model_is_not_blessed_and_the_summary_says_why(pipeline_run):
  """60 steps on 847 captions do not beat the trigram: a result, not an error."""
  run = metadata.load_run(pipeline_run.metadata_path, metadata.run_ids(
      metadata.open_store(pipeline_run.metadata_path))[0])
  found = files.evaluation(run.output('Evaluator', 'evaluation'), run.output('Evaluator', 'blessing'))
  assert not found.blessed and found.baseline == {}
  ratio = found.overall['perplexity_ratio_to_kneser_ney_trigram']
  assert ratio > 1
  assert (f'evaluation:    not blessed: perplexity_ratio_to_kneser_ney_trigram {ratio:.3f} '
          '(threshold: <= 1)') in pipeline_run.first.stdout
  assert 'pushed:        nothing (the model was not blessed)' in pipeline_run.first.stdout
  assert files.serving_versions(os.path.join(pipeline_run.output_dir, 'serving', 'coco-captions')) == []


def test_score_command_without_a_pushed_model_says_so(pipeline_run):
  result = subprocess.run(
      [sys.executable, '-m', 'pipeline.tools.score', 'A dog on a couch.'],
      input='', capture_output=True, text=True, timeout=300,
      env=dict(os.environ, COCO_OUTPUT_DIR=pipeline_run.output_dir))
  assert result.returncode == 2
  assert result.stderr.startswith('error: no model has been pushed to ')
  assert '--model DIR' in result.stderr and 'Traceback' not in result.stderr
  model_dir = os.path.join(metadata.latest_model_uri(
      metadata.open_store(pipeline_run.metadata_path)), 'Format-Serving')
  piped = subprocess.run(
      [sys.executable, '-m', 'pipeline.tools.score', '--model', model_dir],
      input='a cat\nthe the the\n', capture_output=True, text=True, timeout=300,
      env=dict(os.environ, COCO_OUTPUT_DIR=pipeline_run.output_dir))
  assert [line.split('\t')[2] for line in piped.stdout.strip().splitlines()] == ['a cat', 'the the the']
