"""The Evaluator's configuration: what is measured, on which slices, and the
two conditions a candidate model must meet to be blessed.

1. It beats the Kneser-Ney trigram fitted on the same train split and scored
   on the same eval split: `perplexity_ratio_to_kneser_ney_trigram` at most
   `max_ratio` (1 by default; a larger bound suits data too small for a
   neural model to beat a trigram, such as the tests' sample).
   The trigram's perplexity is the one the Trainer measured and exported with
   the model (modules/export.py), so the gate needs no number typed in here.
2. Its perplexity is at most `margin` (relative) above that of the latest
   blessed model (the resolver's baseline). The first run has no baseline;
   TFMA then skips change thresholds and (1) alone decides.

Both are checked on the whole eval split only; the slices (caption length,
image license) are reported, not gated.
"""

from typing import List

import tensorflow_model_analysis as tfma

from modules import constants, evaluation, features

EVAL_SPLIT = 'eval'
SLICE_FEATURES = (features.LENGTH_BUCKET_KEY, features.LICENSE_KEY)


def slicing_specs() -> List[tfma.SlicingSpec]:
  """The whole split, then one slicing per feature of SLICE_FEATURES."""
  return [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[key]) for key in SLICE_FEATURES]


def _on_whole_split(threshold: tfma.MetricThreshold) -> List[tfma.PerSliceMetricThreshold]:
  """A threshold of the overall slice only: a short-caption slice is not the model."""
  return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]


def eval_config(margin: float, max_ratio: float) -> tfma.EvalConfig:
  """TFMA config: perplexity and its ratio to the trigram (modules/evaluation.py)
  and caption counts, per slice; blessing per the module docstring. The
  thresholds sit in each metric's own MetricConfig: TFMA keys them to the
  metric's name there (MetricsSpec-level thresholds are for in-graph metrics)."""
  beats_trigram = tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
      upper_bound={'value': max_ratio}))
  not_worse = tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
      direction=tfma.MetricDirection.LOWER_IS_BETTER, relative={'value': margin}))
  module = evaluation.__name__
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(
          # A SavedModel scored through its signatures (as TF Serving would), not
          # a Keras model: TFMA need not try to revive one to find out.
          model_type=tfma.TF_GENERIC,
          signature_name=constants.SERVING_SIGNATURE,
          preprocessing_function_names=[constants.TRANSFORM_SIGNATURE])],
      slicing_specs=slicing_specs(),
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name='ExampleCount'),
          tfma.MetricConfig(class_name=evaluation.CaptionPerplexity.__name__, module=module,
                            per_slice_thresholds=_on_whole_split(not_worse)),
          tfma.MetricConfig(class_name=evaluation.PerplexityRatioToKneserNey.__name__,
                            module=module, per_slice_thresholds=_on_whole_split(beats_trigram)),
      ])])
