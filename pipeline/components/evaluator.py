"""Evaluator's executor: TFX's, except that a candidate which *is* its baseline
is not scored twice more.

Why: when a run changes nothing, the Trainer is cached and hands the Evaluator
the model it already evaluated, while the resolver now returns that same model
as the latest blessed one (on the first run it returned none). The inputs
differ, so TFX executes the Evaluator again, and TFMA would score the eval
split with the model twice to compare it with itself: the slowest part of a
re-run. Comparing a model with itself decides nothing (every change is 0, so
the change threshold holds), and the value thresholds were already checked
on the same examples with the same config. Here that earlier evaluation is
found (each evaluation records what it was of in `files.EVALUATED_FILE`, next to
TFMA's files, in the same Evaluator output directory) and copied; the
blessing is written from its validation result, exactly as TFX does.
Anything else, or no such evaluation (another pipeline root, a Vertex run
whose outputs live elsewhere, files removed), is TFX's evaluation.
"""

import json
import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.evaluator import constants
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, json_utils

from pipeline.artifacts import files


def evaluated_key(input_dict: Dict[str, List[types.Artifact]],
                  exec_properties: Dict[str, Any]) -> Dict[str, Any]:
  """What makes two evaluations of one model the same: the model, the example
  split directories read and the eval config as the pipeline gave it."""
  splits = json_utils.loads(
      exec_properties.get(standard_component_specs.EXAMPLE_SPLITS_KEY, 'null')) or ['eval']
  examples = input_dict[standard_component_specs.EXAMPLES_KEY]
  models = input_dict.get(standard_component_specs.MODEL_KEY) or []
  return {
      'model': models[0].uri if models else None,   # None: model-agnostic (predictions in the data)
      'examples': [uri for split in splits
                   for uri in artifact_utils.get_split_uris(examples, split)],
      'eval_config': exec_properties.get(standard_component_specs.EVAL_CONFIG_KEY),
  }


def is_own_baseline(input_dict: Dict[str, List[types.Artifact]]) -> bool:
  """Whether the baseline the resolver found is the candidate model itself."""
  baselines = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY) or []
  candidates = input_dict.get(standard_component_specs.MODEL_KEY) or []
  return (len(baselines) == 1 and len(candidates) == 1
          and baselines[0].uri.rstrip('/') == candidates[0].uri.rstrip('/'))


def find_evaluation(output_uri: str, key: Dict[str, Any]) -> Optional[str]:
  """An earlier evaluation of `key` among the siblings of `output_uri` (TFX
  gives each execution its own directory under the Evaluator's output), the
  newest first; None when there is none."""
  parent = os.path.dirname(output_uri.rstrip('/'))
  if not fileio.isdir(parent):
    return None
  siblings = [name.rstrip('/') for name in fileio.listdir(parent)]
  siblings = sorted((s for s in siblings if s.isdigit()), key=int, reverse=True)
  for name in siblings:
    candidate = os.path.join(parent, name)
    record = os.path.join(candidate, files.EVALUATED_FILE)
    if candidate.rstrip('/') == output_uri.rstrip('/') or not fileio.exists(record):
      continue
    with fileio.open(record) as f:
      found = json.load(f)
    if all(found.get(k) == v for k, v in key.items()):
      return candidate
  return None


def write_blessing(input_dict: Dict[str, List[types.Artifact]],
                   output_dict: Dict[str, List[types.Artifact]],
                   exec_properties: Dict[str, Any], evaluation_uri: str) -> bool:
  """The blessing artifact as TFX's Evaluator writes it, from the validation
  result in `evaluation_uri`; returns whether the model is blessed."""
  import tensorflow_model_analysis as tfma  # pylint: disable=g-import-not-at-top
  blessing = artifact_utils.get_single_instance(
      output_dict[standard_component_specs.BLESSING_KEY])
  model = input_dict[standard_component_specs.MODEL_KEY][0]
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_URI_KEY,
                                      model.uri)
  blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY, model.id)
  baseline = input_dict[standard_component_specs.BASELINE_MODEL_KEY][0]
  blessing.set_string_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_URI_KEY,
                                      baseline.uri)
  blessing.set_int_custom_property(constants.ARTIFACT_PROPERTY_BASELINE_MODEL_ID_KEY,
                                   baseline.id)
  if 'current_component_id' in exec_properties:
    blessing.set_string_custom_property('component_id', exec_properties['current_component_id'])
  ok = tfma.load_validation_result(evaluation_uri).validation_ok
  name = constants.BLESSED_FILE_NAME if ok else constants.NOT_BLESSED_FILE_NAME
  io_utils.write_string_file(os.path.join(blessing.uri, name), '')
  blessing.set_int_custom_property(
      constants.ARTIFACT_PROPERTY_BLESSED_KEY,
      constants.BLESSED_VALUE if ok else constants.NOT_BLESSED_VALUE)
  return ok


class Executor(evaluator_executor.Executor):
  """TFX's Evaluator; an evaluation of the same model is reused when the
  candidate is its own baseline (module docstring)."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    output_uri = artifact_utils.get_single_uri(output_dict[constants.EVALUATION_KEY])
    key = evaluated_key(input_dict, exec_properties)
    earlier = find_evaluation(output_uri, key) if is_own_baseline(input_dict) else None
    if earlier is None:
      super().Do(input_dict, output_dict, exec_properties)
      record = dict(key)
    else:
      for name in fileio.listdir(earlier):
        name = name.rstrip('/')
        if name != files.EVALUATED_FILE:
          io_utils.copy_file(os.path.join(earlier, name), os.path.join(output_uri, name),
                             overwrite=True)
      blessed = write_blessing(input_dict, output_dict, exec_properties, output_uri)
      logging.info('The candidate is the latest blessed model itself: reused the evaluation '
                   'in %s (blessed: %s).', earlier, blessed)
      record = dict(key, reused_from=earlier)
    with fileio.open(os.path.join(output_uri, files.EVALUATED_FILE), 'w') as f:
      json.dump(record, f, indent=1)
