"""The default run, measured: `make run` on the shipped data/ (all 25,014
COCO val2017 captions and the Beam docs' two rows), cold, then again cached,
side by side with the same run of an earlier commit's defaults.

    make quality        # or: .venv/bin/python bench/quality.py [--before REV]

Runs local_runner.py with the default settings on a fresh pipeline root and
reports, from the run's metrics.json, ML Metadata and console: model,
Kneser-Ney trigram and unigram perplexity on the eval split and their
ratios, every component's seconds (Evaluator and Pusher included), the
blessing and the push, and the cached re-run against the cold one. First
it runs the project as it was at `--before` (its own code and defaults,
exported with `git archive`, the same venv and data) the same way, so both
Trainers are measured on one machine within minutes. Writes
bench/results/quality-<date>.md.

Bars (issues #2, #11 and #22): eval perplexity <= 0.6 x the trigram's; the
Trainer at most half of the `--before` one's seconds; the whole default run
< 240 s and Evaluator <= 30 s on 2 cores; cached re-run <= 0.1 x the cold one.
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
# main before issue 22: full softmax, unbucketed batches, the GRU alone, 800 steps
BEFORE = '9eb0d64'
RATIO_BAR = 0.6
TRAINER_SHARE_BAR = 0.5
RUN_SECONDS_BAR = 240
EVALUATOR_SECONDS_BAR = 30
CACHED_RATIO_BAR = 0.1


def run_pipeline(output_dir: str, project_dir: str = settings.PROJECT_DIR):
  """Runs the default pipeline of the project at `project_dir` in a fresh
  process; returns (wall seconds, stdout)."""
  env = dict(os.environ, COCO_OUTPUT_DIR=output_dir)
  for name in [n for n in env if n.startswith('COCO_') and n != 'COCO_OUTPUT_DIR']:
    env.pop(name)  # the defaults, whatever the caller's shell says
  start = time.time()
  done = subprocess.run([sys.executable, os.path.join(project_dir, 'local_runner.py')],
                        env=env, check=True, capture_output=True, text=True, cwd=project_dir)
  print(done.stdout)
  return time.time() - start, done.stdout


def export_source(rev: str, target: str) -> str:
  """The project's files at `rev` in `target` (no .git: it runs as a copy)."""
  os.makedirs(target)
  archive = subprocess.run(['git', 'archive', rev], cwd=settings.PROJECT_DIR, check=True,
                           capture_output=True).stdout
  subprocess.run(['tar', '-x', '-C', target], input=archive, check=True)
  return target


def trained(output_dir: str):
  """(metrics.json, {component: seconds}) of the first run under `output_dir`."""
  store = metadata.open_store(settings.Settings.from_env({'COCO_OUTPUT_DIR': output_dir})
                              .run.metadata_file)
  with open(os.path.join(metadata.latest_model_uri(store), 'metrics.json')) as f:
    metrics = json.load(f)
  return metrics, {r.component: r.seconds for r in
                   metadata.component_runs(store, metadata.run_ids(store)[0])}


def side_by_side(before_rev: str, before, now) -> str:
  """The two default runs' Trainers and results, one column each."""
  columns = []
  for (metrics, seconds), wall in (before, now):
    columns.append([f'{seconds["Trainer"]:.1f}', f'{metrics["train_seconds"]:.0f}',
                    f'{metrics["train_steps"]} x {metrics["hyperparameters"]["batch_size"]}',
                    f'{wall:.0f}', f'{metrics["eval_perplexity"]:.2f}',
                    f'{metrics["ratio_to_kneser_ney_trigram"]:.3f}',
                    f'{metrics["ratio_to_unigram"]:.4f}',
                    f'{metrics["baselines"]["kneser_ney_trigram"]:.2f}'])
  names = ['Trainer seconds (ML Metadata)', 'of which model.fit (s)', 'train steps x batch',
           'whole run wall clock (s)', 'eval perplexity (all eval captions)',
           'x Kneser-Ney trigram', 'x unigram', 'Kneser-Ney trigram perplexity']
  share = now[0][1]['Trainer'] / before[0][1]['Trainer']
  lines = [f'| measure | before ({before_rev}) | now |', '| --- | ---: | ---: |']
  lines += [f'| {n} | {a} | {b} |' for n, a, b in zip(names, *columns)]
  lines += ['', f'Trainer now / before: {bar(share, TRAINER_SHARE_BAR, "{:.3f}")}; '
            f'perplexity now / before: {now[0][0]["eval_perplexity"] / before[0][0]["eval_perplexity"]:.3f}']
  return '\n'.join(lines)


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
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--before', default=BEFORE, help='the commit to compare with')
  args = parser.parse_args()
  shutil.rmtree(WORK, ignore_errors=True)
  before_output = os.path.join(WORK, 'before-output')
  before_wall, _ = run_pipeline(before_output,
                                export_source(args.before, os.path.join(WORK, 'before-src')))
  output = os.path.join(WORK, 'output')
  cold_wall, console = run_pipeline(output)
  cached_wall, _ = run_pipeline(output)
  now = trained(output)
  compared = side_by_side(args.before, (trained(before_output), before_wall), (now, cold_wall))

  run_settings = settings.Settings.from_env({'COCO_OUTPUT_DIR': output}).run
  store = metadata.open_store(run_settings.metadata_file)
  first, second = metadata.run_ids(store)[:2]
  table = report(now[0], metadata.component_runs(store, first),
                 metadata.component_runs(store, second), cold_wall, cached_wall, console)
  table = f'Side by side:\n\n{compared}\n\nNow:\n\n{table}'
  print(table)
  os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
  out = os.path.join(HERE, 'results', f'quality-{datetime.date.today().isoformat()}.md')
  with open(out, 'w') as f:
    f.write(f'# The default run on data/ ({datetime.datetime.now():%Y-%m-%d %H:%M})\n\n'
            f'Command: `make quality` ({os.cpu_count()} cores): `make run` of {args.before} '
            f'on a fresh root, then `make run` twice on another\n\n{table}\n')
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
