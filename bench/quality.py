"""The quality bar: the default pipeline on the official COCO 2017 val captions.

    make quality        # or: .venv/bin/python bench/quality.py [--keep]

Converts ../shared/data/coco/captions_val2017.json with the ingestion tool,
runs local_runner.py on it with the default settings (fresh pipeline root),
then reports from the run's metrics.json and ML Metadata: model, Kneser-Ney
trigram and unigram perplexity on the eval split, their ratios, and the
Trainer's seconds. Writes bench/results/quality-<date>.md.

Bar (issue #2): eval perplexity <= 0.7 x the trigram's, Trainer <= 180 s.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # this process only reads ML Metadata
import warnings  # noqa: E402
warnings.filterwarnings('ignore')

from pipeline import settings  # noqa: E402
from pipeline.artifacts import metadata  # noqa: E402
from pipeline.tools import ingest  # noqa: E402

VAL2017 = os.path.join(settings.PROJECT_DIR, '..', 'shared', 'data', 'coco', 'captions_val2017.json')
WORK = os.path.join(HERE, 'work', 'quality')
RATIO_BAR = 0.7
TRAINER_SECONDS_BAR = 180


def run_pipeline(data_root: str, output_dir: str) -> float:
  """Runs the default pipeline in a fresh process; returns wall seconds."""
  env = dict(os.environ, COCO_DATA_ROOT=data_root, COCO_OUTPUT_DIR=output_dir)
  for name in ('COCO_TRAIN_STEPS', 'COCO_STEPS_PER_EPOCH', 'COCO_BATCH_SIZE'):
    env.pop(name, None)  # default training settings, whatever the caller's shell says
  start = time.time()
  subprocess.run([sys.executable, os.path.join(settings.PROJECT_DIR, 'local_runner.py')],
                 env=env, check=True)
  return time.time() - start


def report(metrics: dict, trainer_seconds: float, wall: float) -> str:
  trigram = metrics['baselines']['kneser_ney_trigram']
  unigram = metrics['baselines']['unigram_add_one']
  ratio = metrics['ratio_to_kneser_ney_trigram']
  rows = [
      ('captions (train / eval)', f'{metrics["num_train_captions"]} / {metrics["num_eval_captions"]}'),
      ('predicted eval tokens', metrics['num_eval_tokens']),
      ('unigram (add-one) perplexity', f'{unigram:.2f}'),
      ('Kneser-Ney trigram perplexity', f'{trigram:.2f}'),
      ('model eval perplexity', f'{metrics["eval_perplexity"]:.2f}'),
      ('model / trigram', f'{ratio:.3f} (bar <= {RATIO_BAR}: {"PASS" if ratio <= RATIO_BAR else "FAIL"})'),
      ('model / unigram', f'{metrics["ratio_to_unigram"]:.3f}'),
      ('Trainer seconds (ML Metadata)', f'{trainer_seconds:.0f} (bar <= {TRAINER_SECONDS_BAR}: '
       f'{"PASS" if trainer_seconds <= TRAINER_SECONDS_BAR else "FAIL"})'),
      ('of which model.fit', f'{metrics["train_seconds"]:.0f}'),
      ('train steps x batch', f'{metrics["train_steps"]} x {metrics["hyperparameters"]["batch_size"]}'),
      ('whole run wall clock (s)', f'{wall:.0f}'),
  ]
  lines = ['| measure | value |', '| --- | --- |'] + [f'| {k} | {v} |' for k, v in rows]
  lines += ['', 'Per epoch:', '', '| step | train loss | eval loss | eval perplexity | s |',
            '| --- | --- | --- | --- | --- |']
  lines += [f'| {h["step"]} | {h["train_loss"]} | {h["eval_loss"]} | {h["eval_perplexity"]} | '
            f'{h["seconds"]} |' for h in metrics['history']]
  return '\n'.join(lines)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--annotations', default=VAL2017)
  args = parser.parse_args()
  if not os.path.exists(args.annotations):
    print(f'error: {args.annotations} is absent', file=sys.stderr)
    return 2
  shutil.rmtree(WORK, ignore_errors=True)
  data_root = os.path.join(WORK, 'data')
  count = ingest.ingest(args.annotations, os.path.join(data_root, 'captions.csv'))
  print(f'ingested {count} captions')
  wall = run_pipeline(data_root, os.path.join(WORK, 'output'))

  root = settings.Settings.from_env({'COCO_OUTPUT_DIR': os.path.join(WORK, 'output')}).run.pipeline_root
  store = metadata.open_store(os.path.join(root, 'metadata.db'))
  trainer = [r for r in metadata.component_runs(store) if r.component == 'Trainer'][0]
  with open(os.path.join(metadata.latest_model_uri(store), 'metrics.json')) as f:
    metrics = json.load(f)
  table = report(metrics, trainer.seconds, wall)
  print(table)
  os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
  out = os.path.join(HERE, 'results', f'quality-{datetime.date.today().isoformat()}.md')
  with open(out, 'w') as f:
    f.write(f'# Quality on COCO val2017 captions ({datetime.datetime.now():%Y-%m-%d %H:%M})\n\n'
            f'Command: `make quality` ({os.cpu_count()} cores)\n\n{table}\n')
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
