"""The Trainer's entry point, `run_fn`: read, measure the baselines, train,
evaluate, export. Each step is a named function; the model, its data and its
export live in modules/model.py, modules/inputs.py and modules/export.py.
"""

import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Dict, Tuple

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from tfx.components.trainer.fn_args_utils import FnArgs

from modules import baselines, constants, features
from modules.export import export_model
from modules.inputs import lm_dataset, load_split, sequences
from modules.model import (CaptionLM, EpochLogger, WarmupCosine, build_model, corpus_nll,
                           sampler_weights, target_counts, unigram_log_probs)

log = logging.getLogger('coco_captions.trainer')


def _fit_schedule(train_steps: int, steps_per_epoch: int) -> Tuple[int, int]:
  """Epochs and steps per epoch whose product is the requested step count
  (rounded up to a whole epoch)."""
  epochs = max(1, round(train_steps / max(1, steps_per_epoch)))
  return epochs, math.ceil(train_steps / epochs)


def num_classes_of(tft_output: tft.TFTransformOutput) -> int:
  """The model's classes: reserved ids, the vocabulary Transform built, OOV."""
  return constants.num_classes(tft_output.vocabulary_size_by_name(constants.VOCAB_NAME))


def baseline_perplexities(train_seqs, eval_seqs, num_classes: int, mixed_order: int,
                          ) -> Tuple[Dict[str, float], baselines.KneserNey]:
  """The count models the LM must beat, fitted and scored on its own tokens;
  and the Kneser-Ney model of `mixed_order` the LM mixes in (the baseline
  trigram itself when that is 3)."""
  start = time.time()
  trigram = baselines.KneserNey(train_seqs, num_classes)
  found = {
      'unigram_add_one': baselines.unigram_perplexity(train_seqs, eval_seqs, num_classes),
      'kneser_ney_trigram': trigram.perplexity(eval_seqs),
  }
  mixed = trigram if mixed_order == 3 else baselines.KneserNey(train_seqs, num_classes,
                                                               mixed_order)
  log.info('baselines: unigram perplexity %.2f, Kneser-Ney trigram %.2f (%.1fs)',
           found['unigram_add_one'], found['kneser_ney_trigram'], time.time() - start)
  return found, mixed


def make_model(train_split: Dict[str, Any], num_classes: int, hp: Dict[str, Any],
               kneser_ney: baselines.KneserNey) -> CaptionLM:
  """The untrained model of `hp`: its output bias and its sampler follow the
  train split's target counts; it scores mixed with `kneser_ney`."""
  counts = target_counts(train_split, num_classes)
  weights = (None if hp['sampler_distortion'] is None
             else sampler_weights(counts, hp['sampler_distortion']))
  model = build_model(num_classes, hp['embed_dim'], hp['gru_units'], hp['dropout'],
                      output_bias=unigram_log_probs(counts),
                      sampled_softmax=hp['sampled_softmax'], sampler_weights=weights)
  model.attach_kneser_ney(kneser_ney.tables(), hp['kneser_ney_weight'])
  return model


@dataclasses.dataclass
class EvalData:
  """The whole eval split (the final, exact perplexity) and the fixed sample
  of it scored after each epoch (so watching training costs the same at any
  data size)."""
  full: tf.data.Dataset
  sample_batches: int
  sample_captions: int
  is_everything: bool     # the sample is the whole split: its score is final

  @property
  def sample(self) -> tf.data.Dataset:
    """The first `sample_batches` batches of `full`."""
    return self.full.take(self.sample_batches)


def eval_data(evals: Dict[str, Any], hp: Dict[str, Any], eval_steps) -> EvalData:
  full = lm_dataset(evals, constants.EVAL_BATCH, training=False, seed=hp['seed'])
  if eval_steps:
    full = full.take(eval_steps)
  num_eval = len(evals[features.NUM_TOKENS_KEY])
  batches = max(1, hp['epoch_eval_captions'] // constants.EVAL_BATCH)
  captions = min(num_eval, batches * constants.EVAL_BATCH)
  return EvalData(full, batches, captions, captions == num_eval and not eval_steps)


def train(model, train_split: Dict[str, Any], data: EvalData, hp: Dict[str, Any],
          train_steps: int) -> EpochLogger:
  """Fits `model` for about `train_steps` steps, evaluating after each epoch;
  returns the epoch log (the best epoch's weights are in the model)."""
  epochs, steps_per_epoch = _fit_schedule(train_steps, hp['steps_per_epoch'])
  schedule = WarmupCosine(hp['learning_rate'], hp['warmup_steps'], epochs * steps_per_epoch)
  # An epoch's steps in one call of the compiled step: the per-step Python of
  # Keras' fit loop cost ~3 of ~63 ms a step (bench/results/trainer-ablation-2026-12-07.md);
  # nothing here looks at a single step.
  model.compile(optimizer=keras.optimizers.Adam(schedule, beta_1=hp['adam_beta_1'],
                                                global_clipnorm=1.0),
                steps_per_execution=steps_per_epoch)
  # Its slots made now, fit's first call traces the step once instead of
  # twice (a function that creates variables is traced again without them).
  model.optimizer.build(model.trainable_variables)
  epoch_logger = EpochLogger(data.sample, data.sample_captions, steps_per_epoch, hp['patience'],
                             whole=None if data.is_everything else data.full,
                             sample_batches=data.sample_batches)
  start = time.time()
  model.fit(lm_dataset(train_split, hp['batch_size'], training=True, seed=hp['seed'],
                       bucketed=hp['length_buckets']),
            epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
            callbacks=[epoch_logger])
  epoch_logger.train_seconds = time.time() - start
  return epoch_logger


def final_perplexity(model, data: EvalData, epoch_logger: EpochLogger) -> float:
  """Perplexity on the whole eval split: the best epoch's, when its sample
  already was the whole split; the last epoch's whole-split score, when that
  is the best; else scored now."""
  if data.is_everything:
    return epoch_logger.history[epoch_logger.best_epoch - 1]['eval_perplexity']
  if epoch_logger.whole_score and epoch_logger.best_epoch == len(epoch_logger.history):
    total, count = epoch_logger.whole_score
  else:
    total, count = corpus_nll(model, data.full)
  return round(math.exp(total / max(count, 1)), 3)


def metrics_of(eval_ppl: float, baseline_ppl: Dict[str, float], epoch_logger: EpochLogger,
               train_seqs, eval_seqs, num_classes: int, hp: Dict[str, Any]) -> Dict[str, Any]:
  """metrics.json: quality against the baselines, the training history, sizes."""
  metrics = {
      'eval_perplexity': eval_ppl,
      'baselines': {k: round(v, 3) for k, v in baseline_ppl.items()},
      'ratio_to_kneser_ney_trigram': round(eval_ppl / baseline_ppl['kneser_ney_trigram'], 4),
      'ratio_to_unigram': round(eval_ppl / baseline_ppl['unigram_add_one'], 4),
      'history': epoch_logger.history,
      'train_seconds': round(epoch_logger.train_seconds, 1),
      'train_steps': len(epoch_logger.history) * epoch_logger.steps_per_epoch,
      'best_epoch': epoch_logger.best_epoch,
      'num_train_captions': len(train_seqs),
      'num_eval_captions': len(eval_seqs),
      'num_eval_tokens': baselines.num_predicted(eval_seqs),
      'num_classes': num_classes,
      'hyperparameters': hp,
  }
  log.info('eval perplexity on all %s eval captions %.2f = %.2f x Kneser-Ney trigram, '
           '%.3f x unigram; trained %d steps in %.0fs', f'{len(eval_seqs):,}', eval_ppl,
           metrics['ratio_to_kneser_ney_trigram'], metrics['ratio_to_unigram'],
           metrics['train_steps'], epoch_logger.train_seconds)
  return metrics


def write_metrics(metrics: Dict[str, Any], serving_model_dir: str) -> str:
  """metrics.json next to the serving directory (Format-Serving)."""
  path = os.path.join(os.path.dirname(serving_model_dir.rstrip('/')), constants.METRICS_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump(metrics, f, indent=2)
  return path


def run_fn(fn_args: FnArgs) -> None:
  """TFX Trainer entry point: read, baselines, train, evaluate, export."""
  hp = dict(constants.TRAINER_DEFAULTS, **(fn_args.custom_config or {}))
  keras.utils.set_random_seed(hp['seed'])
  tft_output = tft.TFTransformOutput(fn_args.transform_output)
  num_classes = num_classes_of(tft_output)
  train_split = load_split(fn_args, fn_args.train_files, tft_output)
  evals = load_split(fn_args, fn_args.eval_files, tft_output)
  log.info('loaded %d train / %d eval captions, %d classes',
           len(train_split[features.NUM_TOKENS_KEY]), len(evals[features.NUM_TOKENS_KEY]),
           num_classes)
  train_seqs, eval_seqs = sequences(train_split), sequences(evals)
  baseline_ppl, kneser_ney = baseline_perplexities(train_seqs, eval_seqs, num_classes,
                                                   hp['kneser_ney_order'])
  data = eval_data(evals, hp, fn_args.eval_steps)
  model = make_model(train_split, num_classes, hp, kneser_ney)
  epoch_logger = train(model, train_split, data, hp, fn_args.train_steps)
  eval_ppl = final_perplexity(model, data, epoch_logger)
  metrics = metrics_of(eval_ppl, baseline_ppl, epoch_logger, train_seqs, eval_seqs,
                       num_classes, hp)
  export_model(model, tft_output, fn_args.serving_model_dir,
               kneser_ney_perplexity=baseline_ppl['kneser_ney_trigram'],
               image_size=hp.get('image_size', constants.IMAGE_SIZE))
  write_metrics(metrics, fn_args.serving_model_dir)
