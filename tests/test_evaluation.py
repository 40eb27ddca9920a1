"""Evaluate, bless, push: real runs on one pipeline root (continuous training).

1. the first 5,000 shipped val2017 captions with a 1,000-token vocabulary,
   trained enough to beat the Kneser-Ney trigram fitted on the same split
   (~0.95x): blessed (no earlier model: the trigram alone decides) and pushed;
   1b. the same command again: everything cached but the Evaluator, whose
   candidate is now its own baseline, so it reuses run 1's evaluation;
   nothing new is pushed;
2. the same root with a weak Trainer (a handful of steps): not blessed,
   nothing pushed, the serving directory untouched, exit 0;
3. changed data (the first 4,000 of those captions), normal training: judged
   against run 1's model, which the resolver finds in ML Metadata.

The sizes are the smallest that keep each check meaningful: run 1 must beat
the trigram (a check of blessing needs that, not a good model), and each
split must fill every length slice. bench/quality.py measures quality on
all of val2017.

Plus the unit-level pieces: the TFMA metric against metrics.json, the slices
adding up, and the eval config's gate.
"""

import csv
import gzip
import hashlib
import json
import os
import subprocess
import sys

import pytest
from ml_metadata.proto import metadata_store_pb2

from modules import evaluation as metric_names
from pipeline import evaluation
from pipeline.artifacts import files, metadata
from pipeline.settings import Settings
from tests.conftest import RESOLVER, file_tree, run_local, settings_of
from tests.test_e2e import LOAD_WITH_TF_ONLY

SHIPPED = Settings().run.data_root          # data/captions: all val2017 captions
CT_CAPTIONS = 5000                          # runs 1, 1b and 2 read the first 5k captions
CT_VOCAB = 1000                             # a smaller softmax: cheaper steps, same checks
CT_STEPS = 200                              # enough to beat the trigram on them (~0.95x)
WEAK_STEPS = 5
CHANGED_CAPTIONS = 4000                     # run 3 reads the first 4k captions only


def write_subset(source_dir, target_dir, count):
  """The first `count` captions of the shipped .csv.gz, as a plain CSV."""
  (name,) = [n for n in os.listdir(source_dir) if n.endswith('.csv.gz')]
  with gzip.open(os.path.join(source_dir, name), 'rt', encoding='utf-8', newline='') as f:
    rows = list(csv.reader(f))
  os.makedirs(target_dir, exist_ok=True)
  with open(os.path.join(target_dir, 'captions.csv'), 'w', encoding='utf-8', newline='') as f:
    csv.writer(f).writerows(rows[:count + 1])
  return target_dir


class ContinuousTraining:
  def __init__(self, output_dir):
    data = write_subset(SHIPPED, os.path.join(output_dir, 'data'), CT_CAPTIONS)
    self.env = dict(os.environ, COCO_OUTPUT_DIR=output_dir, COCO_DATA_ROOT=data,
                    COCO_IMAGES='0', COCO_REPORT='0', COCO_TRAIN_STEPS=str(CT_STEPS),
                    COCO_STEPS_PER_EPOCH=str(CT_STEPS), COCO_VOCAB_SIZE=str(CT_VOCAB))
    settings = settings_of(self.env)
    self.metadata_path = settings.run.metadata_file
    self.model_dir = settings.serving.model_dir(settings.run)
    self.first = run_local(self.env)
    self.after_first = file_tree(self.model_dir)
    self.versions_after_first = files.serving_versions(self.model_dir)
    self.again = run_local(self.env)
    self.after_again = file_tree(self.model_dir)
    self.weak = run_local(dict(self.env, COCO_TRAIN_STEPS=str(WEAK_STEPS),
                               COCO_STEPS_PER_EPOCH=str(WEAK_STEPS)))
    self.after_weak = file_tree(self.model_dir)
    changed = write_subset(SHIPPED, os.path.join(output_dir, 'changed_data'), CHANGED_CAPTIONS)
    self.changed = run_local(dict(self.env, COCO_DATA_ROOT=changed))

  FIRST, AGAIN, WEAK, CHANGED = range(4)   # the runs' order in ML Metadata

  def run(self, index):
    return metadata.load_run(self.metadata_path, metadata.run_ids(
        metadata.open_store(self.metadata_path))[index])


@pytest.fixture(scope='module')
def ct(tmp_path_factory):
  runs = ContinuousTraining(str(tmp_path_factory.mktemp('ct')))
  for name in ('first', 'again', 'weak', 'changed'):
    result = getattr(runs, name)
    assert result.returncode == 0, f'{name} run failed:\n{result.stdout}\n{result.stderr}'
  return runs


def states(run):
  return {r.component: r.state for r in run.components}


def blessed(run):
  return run.artifact('Evaluator', 'blessing').custom_properties['blessed'].int_value == 1


def pushed(run):
  return run.artifact('Pusher', 'pushed_model').custom_properties['pushed'].int_value == 1


# ------------------------------------------------------------------ the three runs
@pytest.mark.slow
def test_first_run_is_blessed_and_pushed_in_tf_serving_layout(ct):
  run = ct.run(ct.FIRST)
  assert states(run)['Evaluator'] == 'COMPLETE' and states(run)['Pusher'] == 'COMPLETE'
  assert blessed(run) and pushed(run)
  found = files.evaluation(run.output('Evaluator', 'evaluation'), run.output('Evaluator', 'blessing'))
  assert found.baseline == {}      # a first run has no earlier blessed model
  assert found.overall[metric_names.RATIO_TO_KNESER_NEY] < 1.0
  (version,) = ct.versions_after_first      # run 3 may push a second one
  assert os.path.isfile(os.path.join(ct.model_dir, version, 'saved_model.pb'))
  destination = run.artifact('Pusher', 'pushed_model').custom_properties['pushed_destination']
  assert destination.string_value == os.path.join(ct.model_dir, version)
  assert f'pushed:        {os.path.join(ct.model_dir, version)}' in ct.first.stdout
  assert 'evaluation:    blessed: perplexity ' in ct.first.stdout


@pytest.mark.slow
def test_same_run_again_reuses_the_evaluation_and_pushes_nothing_new(ct):
  first, again = ct.run(ct.FIRST), ct.run(ct.AGAIN)
  assert all(state == 'CACHED' for component, state in states(again).items()
             if component not in (RESOLVER, 'Evaluator', 'Pusher')), states(again)
  assert states(again)['Evaluator'] == 'COMPLETE'
  evaluation_uri = again.output('Evaluator', 'evaluation')
  found = files.evaluation(evaluation_uri, again.output('Evaluator', 'blessing'))
  earlier = files.evaluation(first.output('Evaluator', 'evaluation'),
                             first.output('Evaluator', 'blessing'))
  assert found.reused_from == first.output('Evaluator', 'evaluation')
  assert found.slices == earlier.slices and found.blessed and blessed(again)
  blessing = again.artifact('Evaluator', 'blessing').custom_properties
  model_id = first.artifact('Trainer', 'model').id
  assert blessing['current_model_id'].int_value == blessing['baseline_model_id'].int_value == model_id
  assert ct.after_again == ct.after_first          # same versions, same bytes
  assert 'the latest blessed model itself (its evaluation reused)' in ct.again.stdout


@pytest.mark.slow
def test_pushed_model_scores_a_real_caption_above_its_shuffled_twin_with_tf_only(ct, tmp_path):
  (version,) = ct.versions_after_first
  real = 'A man riding a wave on top of a surfboard.'
  shuffled = 'surfboard wave of man a riding top on a A.'
  script = tmp_path / 'load.py'
  script.write_text(LOAD_WITH_TF_ONLY)
  result = subprocess.run(
      [sys.executable, '-I', str(script), os.path.join(ct.model_dir, version),
       json.dumps([real, shuffled])], capture_output=True, text=True, cwd=str(tmp_path),
      timeout=300, env=dict(os.environ, PYTHONPATH='', TF_CPP_MIN_LOG_LEVEL='3'))
  assert result.returncode == 0, result.stderr
  scores = json.loads(result.stdout.strip().splitlines()[-1])
  real_ppl, shuffled_ppl = scores['perplexity']
  assert real_ppl < shuffled_ppl / 3
  assert scores['served'][0] == pytest.approx(real_ppl, rel=1e-5)


@pytest.mark.slow
def test_weak_model_is_not_blessed_and_nothing_is_pushed(ct):
  run = ct.run(ct.WEAK)
  assert states(run)['Trainer'] == 'COMPLETE' and states(run)['Evaluator'] == 'COMPLETE'
  assert not blessed(run) and not pushed(run)
  assert ct.after_weak == ct.after_first and ct.after_first   # same versions, same bytes
  found = files.evaluation(run.output('Evaluator', 'evaluation'), run.output('Evaluator', 'blessing'))
  first = files.evaluation(ct.run(ct.FIRST).output('Evaluator', 'evaluation'),
                           ct.run(ct.FIRST).output('Evaluator', 'blessing'))
  # The baseline is run 1's model, scored again on the same eval split.
  assert found.baseline['perplexity'] == pytest.approx(first.overall['perplexity'], rel=1e-6)
  assert {f.metric for f in found.failures} == {
      metric_names.RATIO_TO_KNESER_NEY, metric_names.PERPLEXITY + ' (change)'}
  (line,) = [l for l in ct.weak.stdout.splitlines() if l.startswith('evaluation:')]
  assert 'not blessed: ' in line and 'perplexity_ratio_to_kneser_ney_trigram' in line
  assert '(threshold: <= 1)' in line and 'at most 1% above the latest blessed model' in line
  assert 'pushed:        nothing (the model was not blessed)' in ct.weak.stdout


@pytest.mark.slow
def test_changed_data_is_judged_against_the_first_runs_model(ct):
  first, changed = ct.run(ct.FIRST), ct.run(ct.CHANGED)
  assert states(changed)['CsvExampleGen'] == 'COMPLETE'       # new data, new examples
  assert states(changed)['Evaluator'] == 'COMPLETE'
  store = metadata.open_store(ct.metadata_path)
  evaluator = [r for r in changed.components if r.component == 'Evaluator'][0]
  inputs = {}
  for event in store.get_events_by_execution_ids([evaluator.execution_id]):
    if event.type == metadata_store_pb2.Event.INPUT:
      key = next(s.key for s in event.path.steps if s.HasField('key'))
      inputs[key] = event.artifact_id
  first_model = first.artifact('Trainer', 'model').id
  assert inputs['baseline_model'] == first_model
  assert inputs['model'] == changed.artifact('Trainer', 'model').id != first_model
  resolver = [r for r in changed.components if r.component == RESOLVER]
  assert resolver and resolver[0].state == 'COMPLETE'
  (line,) = [l for l in ct.changed.stdout.splitlines() if l.startswith('evaluation:')]
  assert "latest blessed model" in line


@pytest.mark.slow
def test_score_command_uses_the_latest_pushed_model(ct):
  result = subprocess.run(
      [sys.executable, '-m', 'pipeline.tools.score', 'A dog on a couch.'],
      capture_output=True, text=True, timeout=300, env=ct.env)
  assert result.returncode == 0, result.stderr
  ppl, _, caption = result.stdout.strip().split('\t')
  newest = os.path.join(ct.model_dir, files.serving_versions(ct.model_dir)[-1])
  (expected, _), = files.score_captions(newest, ['A dog on a couch.'])
  assert caption == 'A dog on a couch.' and float(ppl) == pytest.approx(expected, abs=0.01)


# ------------------------------------------------------------------ the metric itself
@pytest.mark.slow
def test_tfma_perplexity_equals_the_trainers_and_slices_add_up(ct):
  run = ct.run(ct.FIRST)
  found = files.evaluation(run.output('Evaluator', 'evaluation'), run.output('Evaluator', 'blessing'))
  trained = files.metrics(run.output('Trainer', 'model'))
  overall = found.overall
  assert overall['perplexity'] == pytest.approx(trained['eval_perplexity'], rel=1e-3)
  assert overall[metric_names.KNESER_NEY] == pytest.approx(
      trained['baselines']['kneser_ney_trigram'], rel=1e-5)
  assert overall['example_count'] == trained['num_eval_captions']
  assert overall[metric_names.PREDICTED_TOKENS] == trained['num_eval_tokens']
  for feature in evaluation.SLICE_FEATURES:
    slices = {name: m for name, m in found.slices.items() if name.startswith(feature + '=')}
    assert len(slices) >= 3, found.slices.keys()
    for key in ('example_count', metric_names.PREDICTED_TOKENS):
      assert sum(m[key] for m in slices.values()) == overall[key]
  lengths = {name.split('=', 1)[1] for name in found.slices if name.startswith('length_bucket=')}
  assert lengths == {'<=8', '9-12', '>=13'}


def test_gate_is_on_the_whole_split_only_and_margin_and_ratio_are_the_settings():
  from tensorflow_model_analysis.metrics import metric_specs  # pylint: disable=g-import-not-at-top
  config = evaluation.eval_config(0.05, 1.5)
  thresholds = metric_specs.metric_thresholds_from_metrics_specs(
      config.metrics_specs, eval_config=config)
  by_name = {key.name: found for key, found in thresholds.items()}
  assert set(by_name) == {metric_names.RATIO_TO_KNESER_NEY, metric_names.PERPLEXITY}
  for found in by_name.values():
    assert [str(spec) for spec, _ in found] == ['']        # the overall slice only
  (_, ratio), = by_name[metric_names.RATIO_TO_KNESER_NEY]
  assert ratio.upper_bound.value == 1.5
  (_, change), = by_name[metric_names.PERPLEXITY]
  assert change.relative.value == 0.05
  assert Settings.from_env({'COCO_BLESS_MARGIN': '0.05'}).serving.bless_margin == 0.05
  assert Settings.from_env({'COCO_BLESS_MAX_RATIO': '1.5'}).serving.max_ratio == 1.5
  assert Settings.from_env({}).serving.max_ratio == 1.0
