"""The Trainer's candidates for issue 22, each alone, measured the same way:
fit seconds and exact eval perplexity (the full softmax over the whole eval
split, as the Evaluator computes it) on the default run's data.

    .venv/bin/python bench/trainer_ablation.py [--variants a,b,...]

Runs the default pipeline up to Transform once (bench/work/ablation, cached
afterwards), loads the transformed splits as run_fn does, then trains each
variant in this process from the same seed with modules/trainer.py's
`train`. Writes bench/results/trainer-ablation-<date>.md.

Variants: `old` is the defaults before issue 22 (full softmax, unbucketed
batches, the GRU alone, 800 steps, peak rate 5e-3); each `+x` changes one
thing of `old`;
`new` is today's TRAINER_DEFAULTS and TRAIN_STEPS. What was measured and
not kept is in bench/results/trainer-ablation-2026-12-0{4,7}.md.
"""

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

from modules import constants, features  # noqa: E402
from pipeline import settings  # noqa: E402

WORK = os.path.join(HERE, 'work', 'ablation')
OLD = dict(constants.TRAINER_DEFAULTS, sampled_softmax=0, length_buckets=False,
           kneser_ney_weight=0.0, kneser_ney_order=3, learning_rate=5e-3, steps_per_epoch=200,
           sampler_distortion=None, adam_beta_1=0.9)
OLD_STEPS = 800
VARIANTS = {   # name: (hyperparameters, steps)
    'old': (OLD, OLD_STEPS),
    '+sampled512': (dict(OLD, sampled_softmax=512), OLD_STEPS),
    '+sampled512_unigram': (dict(OLD, sampled_softmax=512, sampler_distortion=1.0), OLD_STEPS),
    '+length_buckets': (dict(OLD, length_buckets=True), OLD_STEPS),
    '+kneser_ney_0.15': (dict(OLD, kneser_ney_weight=0.15), OLD_STEPS),
    '+kneser_ney_4gram_0.18': (dict(OLD, kneser_ney_weight=0.18, kneser_ney_order=4), OLD_STEPS),
    '+rate_8e-3': (dict(OLD, learning_rate=8e-3), OLD_STEPS),
    '+adam_beta_1_0.85': (dict(OLD, adam_beta_1=0.85), OLD_STEPS),
    'new': (constants.TRAINER_DEFAULTS, constants.TRAIN_STEPS),
}
RESULTS = os.path.join(HERE, 'results')


def transform_output(work: str):
  """(transform graph dir, transformed examples dir) of a default run up to
  Transform, made once."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(settings.ENV_PREFIX)}
  env.update(COCO_OUTPUT_DIR=work, COCO_RUN_TO='Transform')
  subprocess.run([sys.executable, os.path.join(settings.PROJECT_DIR, 'local_runner.py')],
                 env=env, check=True, capture_output=True, cwd=settings.PROJECT_DIR)
  from pipeline.artifacts import metadata  # pylint: disable=g-import-not-at-top
  run = metadata.load_run(settings.Settings.from_env(env).run.metadata_file)
  return run.output('Transform', 'transform_graph'), run.output('Transform', 'transformed_examples')


def load(graph_dir: str, examples_dir: str):
  import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top
  from tfx_bsl.public import tfxio  # pylint: disable=g-import-not-at-top
  from modules.inputs import load_split  # pylint: disable=g-import-not-at-top
  tft_output = tft.TFTransformOutput(graph_dir)

  def factory(files, options, schema):
    return tfxio.TFExampleRecord(file_pattern=files, schema=schema).TensorFlowDataset(options)
  fn_args = SimpleNamespace(data_accessor=SimpleNamespace(tf_dataset_factory=factory))
  split = lambda name: load_split(fn_args, [os.path.join(examples_dir, f'Split-{name}', '*')],
                                  tft_output)
  return tft_output, split('train'), split('eval')


def run_variant(hp, steps: int, tft_output, train_split, evals, kneser_ney):
  """Trains one variant as run_fn does; (fit seconds, exact eval perplexity)."""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  from modules import model as model_lib, trainer  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(hp['seed'])
  num_classes = trainer.num_classes_of(tft_output)
  data = trainer.eval_data(evals, hp, None)
  model = trainer.make_model(train_split, num_classes, hp, kneser_ney)
  logger = trainer.train(model, train_split, data, hp, steps)
  total, count = model_lib.corpus_nll(model, data.full)
  return logger.train_seconds, math.exp(total / count)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--one', help=argparse.SUPPRESS)  # internal: train one variant, print JSON
  args = parser.parse_args(argv)
  if not args.one:
    return measure_each(args.variants.split(','))
  graph_dir, examples_dir = transform_output(WORK)
  tft_output, train_split, evals = load(graph_dir, examples_dir)
  from modules import trainer  # pylint: disable=g-import-not-at-top
  from modules.inputs import sequences  # pylint: disable=g-import-not-at-top
  hp, steps = VARIANTS[args.one]
  baseline_ppl, kneser_ney = trainer.baseline_perplexities(
      sequences(train_split), sequences(evals), trainer.num_classes_of(tft_output),
      hp['kneser_ney_order'])
  trigram = baseline_ppl['kneser_ney_trigram']
  seconds, ppl = run_variant(hp, steps, tft_output, train_split, evals, kneser_ney)
  print(json.dumps({'name': args.one, 'steps': steps, 'seconds': seconds, 'perplexity': ppl,
                    'trigram': trigram, 'train': len(train_split[features.NUM_TOKENS_KEY]),
                    'eval': len(evals[features.NUM_TOKENS_KEY])}))
  return 0


def measure_each(names) -> int:
  """Each variant in a fresh process: run one after another in one process,
  the later ones were slower (the new defaults' fit took 83 s as the fifth
  variant there, 67 s alone)."""
  rows = []
  for name in names:
    done = subprocess.run([sys.executable, os.path.abspath(__file__), '--one', name],
                          check=True, capture_output=True, text=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    rows.append(row)
    print(f'{name}: {row["steps"]} steps, fit {row["seconds"]:.1f}s, eval perplexity '
          f'{row["perplexity"]:.3f} ({row["perplexity"] / row["trigram"]:.3f} x trigram)',
          flush=True)
  trigram = rows[0]['trigram']
  lines = [f'# Trainer ablation, {datetime.date.today().isoformat()}', '',
           f'Default data ({rows[0]["train"]:,} train / {rows[0]["eval"]:,} eval captions), '
           f'{os.cpu_count()} cores, each variant alone in a fresh process from seed '
           f'{constants.TRAINER_DEFAULTS["seed"]}; exact eval perplexity (full softmax, whole '
           f'split). Kneser-Ney trigram {trigram:.2f}.', '',
           '| variant | steps | fit s | eval perplexity | x trigram |', '| --- | ---: | ---: | ---: | ---: |']
  lines += [f'| {r["name"]} | {r["steps"]} | {r["seconds"]:.1f} | {r["perplexity"]:.3f} | '
            f'{r["perplexity"] / trigram:.3f} |' for r in rows]
  path = os.path.join(RESULTS, f'trainer-ablation-{datetime.date.today().isoformat()}.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))
  print(f'written: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
