"""DirectRunner and Apache Flink side by side (issue 20): the Beam stages'
seconds at two data sizes, what a Flink stage costs whatever its size, and
whether both engines give the same results.

    .venv/bin/python bench/flink.py [--quick]

One run on this machine, each pipeline run in a fresh process and output directory:
1. the whole default DAG (`make run`) on the shipped val2017 captions
   (data/captions), with COCO_BEAM_MODE=in_memory and =flink, then
   bench/compare_engines.py on the two: examples, statistics counts,
   vocabulary, transformed examples, TFMA perplexity, blessing;
2. ExampleGen..Transform (COCO_RUN_TO=Transform) on bench/run.py's 400k
   captions (val2017 x16 from ../shared) on both engines;
3. a probe: a one-element Beam pipeline on Flink, the bare cost of a job.
Per Beam stage it reports the seconds from ML Metadata; on Flink also the
Flink job's own duration (REST API) and the rest, spent in the launching
process (building the Beam pipeline, staging setup.py's sdist, submitting);
and the fixed cost per stage, the intercept of t = a + b * rows through the two
sizes. The local cluster (tools/flink.sh) is brought up and down by the run.
Writes bench/results/flink-<date>.md.

--quick: bench/run.py's quick data (2.5k and 40k) for steps 1 and 2 on them,
60 Trainer steps; same code path, written to flink-<date>-quick.md.
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
CALLER_ENV = dict(os.environ)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from bench import compare_engines  # noqa: E402
from bench import run as perf  # noqa: E402
from pipeline import settings  # noqa: E402
from pipeline.artifacts import metadata  # noqa: E402
from pipeline.orchestration import flink  # noqa: E402

WORK = os.path.join(HERE, 'work', 'flink')
FLINK_SH = os.path.join(settings.PROJECT_DIR, 'tools', 'flink.sh')
ENGINES = ('in_memory', 'flink')
BEAM_STAGES = ('CsvExampleGen', 'StatisticsGen', 'Transform', 'Evaluator')
DATA_STAGES = ('CsvExampleGen', 'StatisticsGen', 'Transform')
PROBE = '''
import apache_beam as beam, sys
from apache_beam.options.pipeline_options import PipelineOptions
with beam.Pipeline(options=PipelineOptions(sys.argv[1:])) as p:
  p | beam.Create([1]) | beam.Map(lambda x: x)
'''


class Run:
  """One pipeline run: its components (ML Metadata) and, on Flink, job durations."""

  def __init__(self, name: str, engine: str, data_root: str, rows: Optional[int], run_to: Optional[str],
               train_steps: Optional[int]):
    self.name, self.engine, self.rows = name, engine, rows
    self.output_dir = os.path.join(WORK, 'runs', name)
    shutil.rmtree(self.output_dir, ignore_errors=True)
    env = {k: v for k, v in CALLER_ENV.items() if not k.startswith(settings.ENV_PREFIX)}
    env.update(COCO_DATA_ROOT=data_root, COCO_OUTPUT_DIR=self.output_dir, COCO_BEAM_MODE=engine)
    if run_to:
      env['COCO_RUN_TO'] = run_to
    if train_steps:
      env['COCO_TRAIN_STEPS'] = str(train_steps)
    print(f'{name}: {rows or data_root} on {engine} ...', flush=True)
    m = perf.run_measured([sys.executable, perf.LOCAL_RUNNER], env,
                          os.path.join(WORK, 'logs', name))
    self.wall, self.ok, self.error = m.wall, m.returncode == 0, m.stderr_head
    self.pipeline_root = settings.Settings.from_env(env).run.pipeline_root
    store_file = settings.Settings.from_env(env).run.metadata_file
    self.components = metadata.component_runs(metadata.open_store(store_file)) if os.path.exists(
        store_file) else []
    self.job_seconds = {}
    for c in self.components:
      if c.jobs:
        self.job_seconds[c.component] = sum(
            flink.rest(REST, f'/jobs/{jid}')['duration'] for jid in c.jobs) / 1000.0
    if self.rows is None and self.ok:   # the shipped data: as many as CsvExampleGen wrote
      self.rows = sum(compare_engines.example_counts(
          compare_engines.latest_run(self.pipeline_root)).values())
    print(f'{name}: {"ok" if self.ok else "FAILED"} in {self.wall:.0f}s', flush=True)

  def seconds(self, component: str) -> Optional[float]:
    found = [c.seconds for c in self.components if c.component == component]
    return found[0] if found else None


REST = settings.Settings.from_env({}).beam.flink_rest


def probe_seconds() -> Dict[str, float]:
  """A one-element pipeline on the cluster: wall seconds in all, and the Flink
  job's own duration."""
  current = settings.Settings.from_env({})
  from pipeline.beam_args import beam_pipeline_args, job_name_args  # pylint: disable=g-import-not-at-top
  from pipeline.orchestration import workers  # pylint: disable=g-import-not-at-top
  package = workers.build_package(current.run.worker_package)
  args = beam_pipeline_args(current.beam, current.gcp, 'flink', package=package) + job_name_args(
      'bench', 'probe')
  started = time.time()
  subprocess.run([sys.executable, '-c', PROBE, *args], check=True, capture_output=True,
                 cwd=settings.PROJECT_DIR)
  wall = time.time() - started
  job = max((j for j in flink.jobs(REST) if j.name == 'bench-probe'), key=lambda j: j.start_ms)
  return {'wall': wall, 'job': job.duration_ms / 1000.0}


def fmt(x: Optional[float]) -> str:
  return '-' if x is None else f'{x:.1f}'


def fixed_and_rate(small: Run, big: Run, stage: str):
  """t = a + b * rows through the two sizes: (a seconds, 1/b rows per second)."""
  t1, t2 = small.seconds(stage), big.seconds(stage)
  if t1 is None or t2 is None or big.rows == small.rows:
    return None, None
  slope = (t2 - t1) / (big.rows - small.rows)
  return t1 - slope * small.rows, (1 / slope if slope > 0 else None)


def render(full: Dict[str, Run], big: Dict[str, Run], checks, probe, args, small_label,
           big_label) -> List[str]:
  lines = [f'# DirectRunner vs Flink, {datetime.date.today().isoformat()}'
           + (' (quick)' if args.quick else ''), '',
           f'Code: {perf.git_version()}. Machine: {os.cpu_count()} cores. Flink 1.16.3 '
           '(tools/flink.sh: 1 JobManager, 1 TaskManager with 2 slots, parallelism 2), Beam 2.59 '
           'SDK with Beam 2.56\'s Flink job server, SDK workers in an EXTERNAL pool in .venv. '
           'DirectRunner: `in_memory` (the default). One run each; seconds per component from ML '
           'Metadata, Flink job durations from its REST API.', '',
           f'## The whole default DAG on {small_label} captions '
           + ("(bench/run.py's quick data, 60 Trainer steps)" if args.quick else '(data/captions)'), '',
           '| component | DirectRunner s | Flink s | Flink job s | Flink rest s |',
           '| --- | ---: | ---: | ---: | ---: |']
  direct, on_flink = full['in_memory'], full['flink']
  for c in direct.components:
    job = on_flink.job_seconds.get(c.component)
    rest = None if job is None else on_flink.seconds(c.component) - job
    lines.append(f'| {c.component} | {fmt(c.seconds)} | {fmt(on_flink.seconds(c.component))} | '
                 f'{fmt(job)} | {fmt(rest)} |')
  lines.append(f'| **whole run (wall)** | {direct.wall:.0f} | {on_flink.wall:.0f} | | |')
  lines += ['', 'Flink rest = the component\'s seconds minus its Flink job\'s: the launching '
            'process building the Beam pipeline, staging setup.py\'s sdist and the job, and '
            'submitting it.', '', '### Same results', '',
            '| check | equal | detail |', '| --- | --- | --- |']
  lines += [f'| {what} | {"yes" if equal else "**NO**"} | {detail} |' for what, equal, detail in checks]
  lines += ['', f'## The data stages at {small_label} and {big_label} captions', '',
            f'| stage | Direct {small_label} | Direct {big_label} | Flink {small_label} | '
            f'Flink {big_label} | Flink job {big_label} | Direct fixed s | Flink fixed s | '
            'Direct rows/s | Flink rows/s |',
            '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for stage in DATA_STAGES:
    d_fixed, d_rate = fixed_and_rate(full['in_memory'], big['in_memory'], stage)
    f_fixed, f_rate = fixed_and_rate(full['flink'], big['flink'], stage)
    lines.append(
        f'| {stage} | {fmt(full["in_memory"].seconds(stage))} | {fmt(big["in_memory"].seconds(stage))} | '
        f'{fmt(full["flink"].seconds(stage))} | {fmt(big["flink"].seconds(stage))} | '
        f'{fmt(big["flink"].job_seconds.get(stage))} | {fmt(d_fixed)} | {fmt(f_fixed)} | '
        f'{"-" if d_rate is None else f"{d_rate:,.0f}"} | {"-" if f_rate is None else f"{f_rate:,.0f}"} |')
  lines += ['', 'Fixed s and rows/s: the line t = a + b * rows through the two sizes (a, 1/b).',
            '', f'Probe (a one-element Beam pipeline on the cluster): {probe["wall"]:.1f} s in all, '
            f'of which the Flink job {probe["job"]:.1f} s; the rest is starting Python and Beam, '
            'staging and submitting.', '']
  failed = [r for r in list(full.values()) + list(big.values()) if not r.ok]
  for r in failed:
    lines += [f'**{r.name} FAILED**:', '', '```', r.error, '```', '']
  return lines


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true')
  args = parser.parse_args(argv)
  profile = perf.QUICK if args.quick else perf.FULL
  datasets = perf.prepare(profile, perf.VAL2017)
  if args.quick:
    small_root, small_rows = datasets[profile.small].single, datasets[profile.small].rows
  else:
    small_root, small_rows = settings.Settings.from_env({}).run.data_root, None
  up = subprocess.run(['bash', FLINK_SH, 'up'], capture_output=True, text=True)
  if up.returncode:
    print(up.stderr, file=sys.stderr)
    return 1
  try:
    steps = 60 if args.quick else None
    full = {e: Run(f'full-{e}', e, small_root, small_rows, None, steps) for e in ENGINES}
    big = {e: Run(f'stages-{profile.big}-{e}', e, datasets[profile.big].single,
                  datasets[profile.big].rows, 'Transform', None) for e in ENGINES}
    probe = probe_seconds()
  finally:
    subprocess.run(['bash', FLINK_SH, 'down'], capture_output=True)
  checks = (compare_engines.checks(full['in_memory'].pipeline_root, full['flink'].pipeline_root)
            if all(r.ok for r in full.values()) else [])
  lines = render(full, big, checks, probe, args, profile.small, profile.big)
  name = f'flink-{datetime.date.today().isoformat()}' + ('-quick' if args.quick else '') + '.md'
  path = os.path.join(perf.RESULTS, name)
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
  print('\n'.join(lines))
  print(f'written: {path}')
  return 0 if all(r.ok for r in list(full.values()) + list(big.values())) and all(
      equal for _, equal, _ in checks) else 1


if __name__ == '__main__':
  sys.exit(main())
