"""The Trainer's candidates for issue 22, each alone, measured the same way:
fit seconds and exact eval perplexity (the full softmax over the whole eval
split, as the Evaluator computes it) on the default run's data.

    .venv/bin/python bench/trainer_ablation.py [--variants a,b,...] [--steps N]

Runs the default pipeline up to Transform once (bench/work/ablation, cached
afterwards), loads the transformed splits as run_fn does, then trains each
variant in this process from the same seed with modules/trainer.py's
`train`, changing one thing. Writes bench/results/trainer-ablation-<date>.md.

Variants (what changes against today's defaults):
- baseline: TRAINER_DEFAULTS, 800 steps;
- sampled512: a sampled softmax of 512 classes in training only
  (log-uniform sampler: the vocabulary ids are in frequency order);
- batch256: batch 256, 400 steps (the same captions seen), peak rate x1.4.
Two more were measured and removed (bench/results/trainer-ablation-2026-12-04.md):
length-bucketed batches (no faster) and an XLA-compiled train step (killed
for memory).
"""

import argparse
import datetime
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
VARIANTS = {   # each: the TRAINER_DEFAULTS it changes (batch256 also halves the steps)
    'baseline': {},
    'sampled512': {'sampled_softmax': 512},
    'batch256': {},
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


def run_variant(name: str, tft_output, train_split, evals, steps: int):
  """Trains one variant; (fit seconds, exact eval perplexity, steps)."""
  import tf_keras as keras  # pylint: disable=g-import-not-at-top
  from modules import model as model_lib, trainer  # pylint: disable=g-import-not-at-top
  hp = dict(constants.TRAINER_DEFAULTS)
  steps_now = steps
  if name == 'batch256':
    hp.update(batch_size=256, learning_rate=hp['learning_rate'] * 1.4,
              steps_per_epoch=hp['steps_per_epoch'] // 2)
    steps_now = steps // 2
  hp.update(VARIANTS.get(name, {}))
  keras.utils.set_random_seed(hp['seed'])
  num_classes = trainer.num_classes_of(tft_output)
  data = trainer.eval_data(evals, hp, None)
  model = model_lib.build_model(num_classes, hp['embed_dim'], hp['gru_units'], hp['dropout'],
                                output_bias=model_lib.unigram_log_probs(train_split, num_classes),
                                sampled_softmax=hp['sampled_softmax'])
  logger = trainer.train(model, train_split, data, hp, steps_now)
  total, count = model_lib.corpus_nll(model, data.full)
  return logger.train_seconds, math.exp(total / count), steps_now


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--variants', default=','.join(VARIANTS))
  parser.add_argument('--steps', type=int, default=constants.TRAIN_STEPS)
  args = parser.parse_args(argv)
  graph_dir, examples_dir = transform_output(WORK)
  tft_output, train_split, evals = load(graph_dir, examples_dir)
  from modules import baselines  # pylint: disable=g-import-not-at-top
  from modules.inputs import sequences  # pylint: disable=g-import-not-at-top
  num_classes = constants.num_classes(tft_output.vocabulary_size_by_name(constants.VOCAB_NAME))
  trigram = baselines.kneser_ney_perplexity(sequences(train_split), sequences(evals), num_classes)
  rows = []
  for name in args.variants.split(','):
    seconds, ppl, steps = run_variant(name, tft_output, train_split, evals, args.steps)
    rows.append((name, steps, seconds, ppl))
    print(f'{name}: {steps} steps, fit {seconds:.1f}s, eval perplexity {ppl:.3f} '
          f'({ppl / trigram:.3f} x trigram)', flush=True)
  lines = [f'# Trainer ablation, {datetime.date.today().isoformat()}', '',
           f'Default data ({len(train_split[features.NUM_TOKENS_KEY]):,} train / '
           f'{len(evals[features.NUM_TOKENS_KEY]):,} eval captions), {os.cpu_count()} cores, one '
           f'process, each variant alone from seed {constants.TRAINER_DEFAULTS["seed"]}; exact '
           f'eval perplexity (full softmax, whole split). Kneser-Ney trigram {trigram:.2f}.', '',
           '| variant | steps | fit s | eval perplexity | x trigram |', '| --- | ---: | ---: | ---: | ---: |']
  lines += [f'| {n} | {s} | {t:.1f} | {p:.3f} | {p / trigram:.3f} |' for n, s, t, p in rows]
  path = os.path.join(RESULTS, f'trainer-ablation-{datetime.date.today().isoformat()}.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))
  print(f'written: {path}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
