"""Evaluating a caption language model with TFMA: perplexity as a TFMA metric.

TFMA has no perplexity, and a language model has no label: what the
Evaluator needs is in the model's own outputs. The serving signature
(modules/export.py) returns, per caption, its summed log-likelihood, the
number of tokens it predicted, and the Kneser-Ney trigram perplexity the
Trainer measured on the same split. `CaptionPerplexity` combines them into

    perplexity = exp(sum of -log_likelihood / sum of num_predicted_tokens)

exactly as the Trainer computes `metrics.json`, plus the ratio to that
trigram, over any slice. The blessing gate (pipeline/evaluation.py) puts
its thresholds on these names.

This lives in `modules` because the Evaluator imports it by module name
wherever it runs: Beam workers and the component image have this package
installed, like `preprocessing_fn` and `run_fn`.
"""

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types

from modules import constants

PERPLEXITY = 'perplexity'
PREDICTED_TOKENS = 'predicted_tokens'
RATIO_TO_KNESER_NEY = 'perplexity_ratio_to_kneser_ney_trigram'
KNESER_NEY = 'kneser_ney_trigram_perplexity'

def _of_model(value: Any, model_name: str) -> Any:
  """The part of a (possibly multi-model) extract that is `model_name`'s."""
  if isinstance(value, dict) and model_name and model_name in value:
    return value[model_name]
  return value


class _PerplexityCombiner(beam.CombineFn):
  """Sums of -log-likelihood and predicted tokens (and the trigram's
  perplexity, the same for every caption) -> the metrics of one slice."""

  def __init__(self, keys: Dict[str, metric_types.MetricKey], model_name: str):
    self._keys = keys
    self._model_name = model_name

  def create_accumulator(self) -> List[float]:
    return [0.0, 0.0, 0.0]   # summed NLL, predicted tokens, trigram perplexity

  def add_input(self, accumulator: List[float],
                element: metric_types.StandardMetricInputs) -> List[float]:
    outputs = _of_model(element.predictions, self._model_name)
    accumulator[0] -= float(np.sum(outputs[constants.LOG_LIKELIHOOD_OUTPUT]))
    accumulator[1] += float(np.sum(outputs[constants.PREDICTED_TOKENS_OUTPUT]))
    accumulator[2] = max(accumulator[2],
                         float(np.max(outputs[constants.KNESER_NEY_OUTPUT])))
    return accumulator

  def merge_accumulators(self, accumulators: Iterable[List[float]]) -> List[float]:
    merged = self.create_accumulator()
    for nll, count, baseline in accumulators:
      merged[0] += nll
      merged[1] += count
      merged[2] = max(merged[2], baseline)
    return merged

  def extract_output(self, accumulator: List[float]) -> Dict[metric_types.MetricKey, float]:
    nll, count, baseline = accumulator
    perplexity = math.exp(nll / count) if count else float('nan')
    values = {
        PERPLEXITY: perplexity,
        PREDICTED_TOKENS: count,
        KNESER_NEY: baseline,
        RATIO_TO_KNESER_NEY: perplexity / baseline if baseline else float('nan'),
    }
    return {key: values[name] for name, key in self._keys.items()}


def _computations(names: Sequence[str]):
  """The create-computations function of a metric emitting `names`: one
  computation per model (candidate and baseline)."""

  def computations(model_names: Optional[List[str]] = None, output_names=None, sub_keys=None,
                   example_weighted: Optional[bool] = None,
                   **_) -> metric_types.MetricComputations:
    del output_names, sub_keys   # one output dict; captions are not weighted
    found = []
    for model_name in model_names or ['']:
      keys = {name: metric_types.MetricKey(name=name, model_name=model_name,
                                           example_weighted=example_weighted)
              for name in names}
      found.append(metric_types.MetricComputation(
          keys=list(keys.values()),
          preprocessors=[metric_types.StandardMetricInputsPreprocessor(
              include_filter={tfma.PREDICTIONS_KEY: {}}, include_default_inputs=False)],
          combiner=_PerplexityCombiner(keys, model_name)))
    return found
  return computations


class CaptionPerplexity(metric_types.Metric):
  """Corpus perplexity of the captions, and the tokens it is taken over.
  A threshold in its MetricConfig applies to `perplexity`."""

  def __init__(self, name: str = PERPLEXITY):
    super().__init__(_computations((name, PREDICTED_TOKENS)), name=name)

  @property
  def compute_confidence_interval(self) -> bool:
    return False


class PerplexityRatioToKneserNey(metric_types.Metric):
  """Perplexity / the Kneser-Ney trigram's, and the trigram's perplexity (on
  a slice: the slice's perplexity over the whole split's trigram). A
  threshold in its MetricConfig applies to the ratio."""

  def __init__(self, name: str = RATIO_TO_KNESER_NEY):
    super().__init__(_computations((name, KNESER_NEY)), name=name)

  @property
  def compute_confidence_interval(self) -> bool:
    return False


metric_types.register_metric(CaptionPerplexity)
metric_types.register_metric(PerplexityRatioToKneserNey)
