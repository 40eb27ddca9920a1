"""The default run, measured: `make run` on the shipped data/ (all 25,014
COCO val2017 captions and the Beam docs' two rows), cold, then again cached.

    make quality        # or: .venv/bin/python bench/quality.py

Runs local_runner.py with the default settings on a fresh pipeline root and
reports, from the run's metrics.json, ML Metadata and console: model,
Kneser-Ney trigram and unigram perplexity on the eval split and their
ratios, every component's seconds (Evaluator and Pusher included), the
blessing and the push, and the cached re-run against the cold one. Writes
bench/results/quality-<date>.md.

Bars (issues #2 and #11): eval perplexity <= 0.7 x the trigram's; the whole
default run < 240 s and Evaluator <= 30 s on 2 cores; cached re-run <= 0.1 x
the cold one.
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

WORK = os.path.join(HERE, 'work', 'quality')
RATIO_BAR = 0.7
RUN_SECONDS_BAR = 240
EVALUATOR_SECONDS_BAR = 30
CACHED_RATIO_BAR = 0.1


def run_pipeline(output_dir: str):
  """Runs the default pipeline in a fresh process; returns (wall seconds, stdout)."""
  env = dict(os.environ, COCO_OUTPUT_DIR=output_dir)
  for name in [n for n in env if n.startswith('COCO_') and n != 'COCO_OUTPUT_DIR']:
    env.pop(name)  # the defaults, whatever the caller's shell says
  start = time.time()
  done = subprocess.run([sys.executable, os.path.join(settings.PROJECT_DIR, 'local_runner.py')],
                        env=env, check=True, capture_output=True, text=True)
  print(done.stdout)
  return time.time() - start, done.stdout


def bar(value: float, limit: float, fmt: str = '{:.0f}') -> str:
  return f'{fmt.format(value)} (bar <= {limit}: {"PASS" if value <= limit else "FAIL"})'


def report(metrics: dict, cold, cached, cold_wall: float, cached_wall: float,
           console: str) -> str:
  trigram = metrics['baselines']['kneser_ney_trigram']
  unigram = metrics['baselines']['unigram_add_one']
  ratio = metrics['ratio_to_kneser_ney_trigram']
  seconds = {r.component: r.seconds for r in cold}
  summary = {line.split(':', 1)[0]: line.split(':', 1)[1].strip()
             for line in console.splitlines() if line.startswith(('evaluation:', 'pushed:'))}
  rows = [
      ('captions (train / eval)', f'{metrics["num_train_captions"]} / {metrics["num_eval_captions"]}'),
      ('predicted eval tokens', metrics['num_eval_tokens']),
      ('unigram (add-one) perplexity', f'{unigram:.2f}'),
      ('Kneser-Ney trigram perplexity', f'{trigram:.2f}'),
      ('model eval perplexity', f'{metrics["eval_perplexity"]:.2f}'),
      ('model / trigram', bar(ratio, RATIO_BAR, '{:.3f}')),
      ('model / unigram', f'{metrics["ratio_to_unigram"]:.3f}'),
      ('train steps x batch', f'{metrics["train_steps"]} x {metrics["hyperparameters"]["batch_size"]}'),
      ('of which model.fit (s)', f'{metrics["train_seconds"]:.0f}'),
      ('Evaluator seconds (ML Metadata)', bar(seconds.get('Evaluator', float('nan')),
                                               EVALUATOR_SECONDS_BAR, '{:.1f}')),
      ('Pusher seconds', f'{seconds.get("Pusher", float("nan")):.1f}'),
      ('whole run wall clock (s)', bar(cold_wall, RUN_SECONDS_BAR)),
      ('cached re-run wall clock (s)', f'{cached_wall:.0f}'),
      ('cached / cold', bar(cached_wall / cold_wall, CACHED_RATIO_BAR, '{:.3f}')),
      ('blessing', summary.get('evaluation', '?')),
      ('pushed', summary.get('pushed', '?')),
  ]
  lines = ['| measure | value |', '| --- | --- |'] + [f'| {k} | {v} |' for k, v in rows]
  lines += ['', 'Components (seconds from ML Metadata; cold run, then the cached one):', '',
            '| component | cold | cached |', '| --- | --- | --- |']
  again = {r.component: (r.state, r.seconds) for r in cached}
  lines += [f'| {r.component} | {r.seconds:.1f} | {again.get(r.component, ("?", 0))[1]:.1f} '
            f'({again.get(r.component, ("?", 0))[0]}) |' for r in cold]
  lines += ['', 'Per epoch:', '', '| step | train loss | eval loss | eval perplexity | s |',
            '| --- | --- | --- | --- | --- |']
  lines += [f'| {h["step"]} | {h["train_loss"]} | {h["eval_loss"]} | {h["eval_perplexity"]} | '
            f'{h["seconds"]} |' for h in metrics['history']]
  return '\n'.join(lines)


def main() -> int:
  argparse.ArgumentParser(description=__doc__.split('\n\n')[0]).parse_args()
  shutil.rmtree(WORK, ignore_errors=True)
  output = os.path.join(WORK, 'output')
  cold_wall, console = run_pipeline(output)
  cached_wall, _ = run_pipeline(output)

  run_settings = settings.Settings.from_env({'COCO_OUTPUT_DIR': output}).run
  store = metadata.open_store(run_settings.metadata_file)
  first, second = metadata.run_ids(store)[:2]
  with open(os.path.join(metadata.latest_model_uri(store), 'metrics.json')) as f:
    metrics = json.load(f)
  table = report(metrics, metadata.component_runs(store, first),
                 metadata.component_runs(store, second), cold_wall, cached_wall, console)
  print(table)
  os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
  out = os.path.join(HERE, 'results', f'quality-{datetime.date.today().isoformat()}.md')
  with open(out, 'w') as f:
    f.write(f'# The default run on data/ ({datetime.datetime.now():%Y-%m-%d %H:%M})\n\n'
            f'Command: `make quality` ({os.cpu_count()} cores): `make run` twice on a fresh '
            f'root\n\n{table}\n')
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
