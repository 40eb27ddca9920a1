"""The Evaluator executor (pipeline/components/evaluator.py): TFX's own tests
pass against it, and a candidate that is its own baseline reuses the earlier
evaluation of the same model, examples and config, and nothing else does.

The models and examples are TFX's test data (the taxi model) shipped in the
tfx wheel: small enough for TFMA to evaluate in seconds.
"""

import json
import os

import pytest
from tfx.components.evaluator import executor_test as tfx_executor_test
from tfx.types import artifact_utils, standard_artifacts, standard_component_specs
from tfx.utils import json_utils, proto_utils

from pipeline.artifacts import files
from pipeline.components import evaluator

TFX_TESTDATA = os.path.join(os.path.dirname(os.path.dirname(tfx_executor_test.__file__)),
                            'testdata')


@pytest.fixture
def ours_as_tfx_executor(monkeypatch):
  monkeypatch.setattr(tfx_executor_test.executor, 'Executor', evaluator.Executor)


@pytest.mark.slow      # TFMA on TFX's taxi model: ~20 s each
@pytest.mark.parametrize('name', [
    'testEvalutionevaluation_w_eval_config',
    'testEvalutionmodel_agnostic_evaluation',
    'testDoValidationeval_config_w_validation_fail',
    'testDoValidationno_baseline_model_ignore_change_threshold_validation_pass',
])
def test_tfx_evaluator_tests_pass_against_ours(ours_as_tfx_executor, name):
  del ours_as_tfx_executor
  assert hasattr(tfx_executor_test.ExecutorTest, name), f'TFX has no test {name}'
  result = tfx_executor_test.ExecutorTest(name).run()
  assert result.wasSuccessful(), result.errors + result.failures


def model(path, artifact_id):
  found = standard_artifacts.Model()
  found.uri = os.path.join(TFX_TESTDATA, 'trainer', path)
  found.id = artifact_id
  return found


def evaluate(root, execution_id, candidate, baseline):
  """One Evaluator execution as TFX lays them out: <root>/evaluation/<id>."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  examples = standard_artifacts.Examples()
  examples.uri = os.path.join(TFX_TESTDATA, 'csv_example_gen')
  examples.split_names = artifact_utils.encode_split_names(['train', 'eval'])
  schema = standard_artifacts.Schema()
  schema.uri = os.path.join(TFX_TESTDATA, 'schema_gen')
  outputs = {}
  for key, kind in ((standard_component_specs.EVALUATION_KEY, standard_artifacts.ModelEvaluation),
                    (standard_component_specs.BLESSING_KEY, standard_artifacts.ModelBlessing)):
    outputs[key] = [kind()]
    outputs[key][0].uri = os.path.join(root, key, str(execution_id))
  inputs = {standard_component_specs.EXAMPLES_KEY: [examples],
            standard_component_specs.SCHEMA_KEY: [schema],
            standard_component_specs.MODEL_KEY: [candidate]}
  if baseline is not None:
    inputs[standard_component_specs.BASELINE_MODEL_KEY] = [baseline]
  config = tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(label_key='tips')],
      slicing_specs=[tfma.SlicingSpec()],
      metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(
          class_name='ExampleCount',
          threshold=tfma.MetricThreshold(
              value_threshold=tfma.GenericValueThreshold(lower_bound={'value': 1}),
              change_threshold=tfma.GenericChangeThreshold(
                  direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={'value': -1})))])])
  properties = {standard_component_specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(config),
                standard_component_specs.EXAMPLE_SPLITS_KEY: json_utils.dumps(['eval'])}
  evaluator.Executor().Do(inputs, outputs, properties)
  return (outputs[standard_component_specs.EVALUATION_KEY][0],
          outputs[standard_component_specs.BLESSING_KEY][0])


def record(evaluation):
  with open(os.path.join(evaluation.uri, files.EVALUATED_FILE)) as f:
    return json.load(f)


def tfma_files(uri):
  found = {}
  for name in sorted(os.listdir(uri)):
    if name != files.EVALUATED_FILE:
      with open(os.path.join(uri, name), 'rb') as f:
        found[name] = f.read()
  return found


@pytest.mark.slow
def test_own_baseline_reuses_the_earlier_evaluation_and_blesses_from_it(tmp_path):
  current = model('current', 7)
  first, first_blessing = evaluate(str(tmp_path), 1, current, None)
  assert 'reused_from' not in record(first)
  assert record(first)['model'] == current.uri

  again, blessing = evaluate(str(tmp_path), 2, model('current', 7), model('current', 7))
  assert record(again)['reused_from'] == first.uri
  assert tfma_files(again.uri) == tfma_files(first.uri)
  assert os.listdir(blessing.uri) == os.listdir(first_blessing.uri) == ['BLESSED']
  assert blessing.get_int_custom_property('blessed') == 1
  assert blessing.get_int_custom_property('current_model_id') == 7
  assert blessing.get_int_custom_property('baseline_model_id') == 7
  found = files.evaluation(again.uri, blessing.uri)
  assert found.reused_from == first.uri and found.blessed
  assert 'the latest blessed model itself (its evaluation reused)' in found.decision()


@pytest.mark.slow
def test_an_evaluation_of_another_model_is_not_reused(tmp_path):
  evaluate(str(tmp_path), 1, model('previous', 3), None)
  other, blessing = evaluate(str(tmp_path), 2, model('current', 7), model('current', 7))
  assert 'reused_from' not in record(other)      # TFMA ran
  assert files.evaluation(other.uri, blessing.uri).baseline   # and scored the baseline too


def test_only_a_candidate_that_is_its_own_baseline_looks_for_an_earlier_evaluation():
  inputs = lambda a, b: {standard_component_specs.MODEL_KEY: [a],
                         standard_component_specs.BASELINE_MODEL_KEY: [b]}
  assert evaluator.is_own_baseline(inputs(model('current', 1), model('current/', 1)))
  assert not evaluator.is_own_baseline(inputs(model('current', 1), model('previous', 2)))
  assert not evaluator.is_own_baseline({standard_component_specs.MODEL_KEY: [model('current', 1)]})
