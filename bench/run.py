"""The performance benchmark (issue #4): data sizes, caching, Beam modes, ExampleGen.

    .venv/bin/python bench/run.py [--quick] [--only SCENARIO,...] [--keep]

One run on this machine:

1. Prepares the data from ../shared/data/coco/captions_val2017.json with the
   ingestion tool: "25k" (the 25,014 captions as they are) and "400k" (the same
   captions x16, each copy with fresh caption and image ids, so the split by
   image still spreads the copies), each as one CSV and as 8 round-robin
   shards. Cached under bench/work/perf/data and reused when complete.
2. Runs the scenarios, each in a fresh process with a fresh output directory,
   measuring wall clock, peak memory of the process tree (psutil, every 0.2 s)
   and, from ML Metadata, each component's seconds and cache state:
     cold, cached          full pipeline on 25k, then the same command again
     cold_big              full pipeline on 400k
     beam_in_memory, beam_multi_processing, beam_sharded
                           ExampleGen..Transform on 400k per Beam mode
     eg_stock, eg_fast     ExampleGen only (COCO_EXAMPLEGEN=...), 25k and 400k
     pyarrow               baseline: pyarrow.csv parse + Python tokenize, in-process
3. Writes bench/results/<date>.md (tables, ratios against their targets,
   PASS/FAIL) and bench/results/<date>.png (component seconds per scenario).

--quick uses 2.5k and 40k rows and trains 50 steps (same code path; for smoke
tests, written to <date>-quick.*). --only runs a subset (scenarios they need
are added). --keep keeps the pipeline outputs under bench/work/perf/<profile>/runs.
A failed scenario is reported as FAILED with the head of its stderr; the
others still run.
"""

import argparse
import contextlib
import dataclasses
import datetime
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
# Children get the caller's environment, not what importing TFX here adds to it.
CALLER_ENV = dict(os.environ)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # the harness only reads ML Metadata
import warnings  # noqa: E402
warnings.filterwarnings('ignore')

from modules import features  # noqa: E402
from pipeline import settings  # noqa: E402
from pipeline.artifacts import metadata  # noqa: E402
from pipeline.tools import ingest  # noqa: E402

VAL2017 = os.path.join(settings.PROJECT_DIR, '..', 'shared', 'data', 'coco', 'captions_val2017.json')
WORK = os.path.join(HERE, 'work', 'perf')
RESULTS = os.path.join(HERE, 'results')
LOCAL_RUNNER = os.path.join(settings.PROJECT_DIR, 'local_runner.py')

COPIES = 16                 # 400k = 25k x 16
ID_STRIDE = 10_000_000      # copy k: id + k * stride, image_id + k * stride
SHARDS = 8
POLL_SECONDS = 0.2
SCENARIO_TIMEOUT = 3 * 3600
DATA_STAGES = ('CsvExampleGen', 'StatisticsGen', 'SchemaGen', 'Transform')
STDERR_HEAD = 8

# Targets of issue #4.
CACHED_RATIO_MAX = 0.1
DATA_STAGES_RATIO_MAX = 3.0
FAST_OVER_STOCK_MIN = 5.0
WHOLE_RUN_MAX = 240.0
TRAINER_MAX = 180.0


# ---------------------------------------------------------------- profiles

@dataclasses.dataclass(frozen=True)
class Profile:
  """Data sizes and training override of one benchmark flavour."""
  name: str
  small: str                  # label of the base data set
  big: str                    # label of the x16 data set
  max_images: Optional[int]   # ingest only the captions of the N smallest image ids
  train_steps: Optional[int]  # COCO_TRAIN_STEPS for full-pipeline runs (None: default)


FULL = Profile('full', '25k', '400k', None, None)
# --quick: ~500 images x 5 captions; a short Trainer so a smoke test stays short.
QUICK = Profile('quick', '2.5k', '40k', 500, 50)


# ---------------------------------------------------------------- data

@dataclasses.dataclass(frozen=True)
class Dataset:
  label: str
  rows: int
  single: str    # directory holding one CSV
  sharded: str   # directory holding SHARDS CSVs

  def root(self, layout: str) -> str:
    return self.sharded if layout == 'sharded' else self.single


def copied_rows(rows: Sequence[Sequence], copies: int) -> Iterator[List]:
  """`copies` copies of the rows; copy k shifts caption and image ids by k *
  ID_STRIDE so every copy is new data to the pipeline and the hash split by
  image spreads each copy's images over train and eval like the original."""
  for k in range(copies):
    for row in rows:
      yield [row[0] + k * ID_STRIDE, row[1] + k * ID_STRIDE] + list(row[2:])


def write_rows(rows: Iterable[Sequence], out_path: str, shards: int) -> int:
  """Writes through the ingestion tool's writer (same quoting, header and
  round-robin sharding as `pipeline.ingest --shards`), atomically per file."""
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  paths = ingest.shard_paths(out_path, shards)
  with contextlib.ExitStack() as stack:
    outs = [stack.enter_context(open(p + '.partial', 'w', encoding='utf-8', newline=''))
            for p in paths]
    count = ingest.write_csv(rows, outs)
  for p in paths:
    os.replace(p + '.partial', p)
  return count


def _manifest_ok(directory: str, expected: dict) -> bool:
  """A data directory is reusable only if its manifest (written last) says it
  was made from the same source and recipe and all its files are there."""
  try:
    with open(os.path.join(directory, 'manifest.json')) as f:
      manifest = json.load(f)
  except (OSError, ValueError):
    return False
  if {k: manifest.get(k) for k in expected} != expected:
    return False
  return all(os.path.exists(os.path.join(directory, name)) for name in manifest.get('files', []))


def prepare_one(directory: str, recipe: dict, rows_fn, shards: int) -> int:
  """Makes (or reuses) one data directory; returns its row count."""
  expected = dict(recipe, shards=shards)
  if _manifest_ok(directory, expected):
    with open(os.path.join(directory, 'manifest.json')) as f:
      return json.load(f)['rows']
  shutil.rmtree(directory, ignore_errors=True)
  count = write_rows(rows_fn(), os.path.join(directory, 'csv', 'captions.csv'), shards)
  files = [os.path.join('csv', p) for p in ingest.shard_paths('captions.csv', shards)]
  with open(os.path.join(directory, 'manifest.json.partial'), 'w') as f:
    json.dump(dict(expected, rows=count, files=files), f, indent=1)
  os.replace(os.path.join(directory, 'manifest.json.partial'),
             os.path.join(directory, 'manifest.json'))
  return count


def prepare(profile: Profile, source: str) -> Dict[str, Dataset]:
  """Both data sizes of a profile, each as one CSV and as SHARDS shards.

  CsvExampleGen reads every file of its input directory, so the CSVs live in
  a `csv/` subdirectory (the data root) and the manifest beside it.
  """
  stat = os.stat(source)
  base = None

  def base_rows():
    nonlocal base
    if base is None:
      with ingest.local_copy(source) as path:
        base = [row for data in ingest.annotation_files(path)
                for row in ingest.caption_rows(data, name=source, max_images=profile.max_images)]
    return base

  datasets = {}
  for label, copies in ((profile.small, 1), (profile.big, COPIES)):
    recipe = {'source': os.path.abspath(source), 'source_bytes': stat.st_size,
              'source_mtime': int(stat.st_mtime), 'max_images': profile.max_images,
              'copies': copies, 'id_stride': ID_STRIDE}
    dirs = {}
    counts = set()
    for layout, shards in (('single', 1), ('sharded', SHARDS)):
      directory = os.path.join(WORK, 'data', profile.name, label, layout)
      started = time.time()
      count = prepare_one(directory, recipe, lambda c=copies: copied_rows(base_rows(), c), shards)
      print(f'data {label:>5} {layout:<7} {count:>7} rows  {time.time() - started:5.1f}s  {directory}',
            flush=True)
      dirs[layout] = os.path.join(directory, 'csv')
      counts.add(count)
    if len(counts) != 1:
      raise RuntimeError(f'{label}: single and sharded row counts differ: {counts}')
    datasets[label] = Dataset(label, counts.pop(), dirs['single'], dirs['sharded'])
  return datasets


# ---------------------------------------------------------------- measuring a process

class TreeSampler:
  """Polls a process tree: the peak of its summed RSS (a per-process max would
  miss Beam workers and pip running beside the runner) and the Beam SDK worker
  processes it spawned, which prove multi_processing took effect."""

  def __init__(self, pid: int, children: bool = True):
    self.pid = pid
    self.children = children
    self.peak_rss = 0
    self.max_procs = 0
    self.workers: Dict[int, str] = {}
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._poll, daemon=True)

  def _sample(self) -> None:
    try:
      root = psutil.Process(self.pid)
      procs = [root] + (root.children(recursive=True) if self.children else [])
    except psutil.Error:
      return
    total = 0
    for proc in procs:
      try:
        total += proc.memory_info().rss
        if proc.pid != self.pid and proc.pid not in self.workers:
          cmdline = ' '.join(proc.cmdline())
          if 'sdk_worker_main' in cmdline:
            self.workers[proc.pid] = cmdline
      except psutil.Error:
        continue
    self.peak_rss = max(self.peak_rss, total)
    self.max_procs = max(self.max_procs, len(procs))

  def _poll(self) -> None:
    while not self._stop.is_set():
      self._sample()
      self._stop.wait(POLL_SECONDS)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


@dataclasses.dataclass
class Measurement:
  wall: float
  returncode: int
  peak_rss: int          # bytes, summed over the process tree
  ru_maxrss: int         # bytes, largest single process (wait4 of the child)
  workers: Dict[int, str]
  stderr_head: str


def stderr_head(path: str, limit: int = STDERR_HEAD) -> str:
  """The useful head of a failed run's stderr: from the runner's own `error:`
  line if there is one (TensorFlow chatter comes first), else the first lines."""
  try:
    with open(path, errors='replace') as f:
      lines = [l.rstrip() for l in f if l.strip()]
  except OSError:
    return ''
  start = next((i for i, l in enumerate(lines) if l.startswith(('error:', 'Traceback'))), 0)
  return '\n'.join(lines[start:start + limit])


def run_measured(cmd: List[str], env: Dict[str, str], log_dir: str,
                 timeout: float = SCENARIO_TIMEOUT) -> Measurement:
  """Runs `cmd` in its own session; stdout/stderr go to files (a pipe could
  fill up and stall a long run). On timeout or Ctrl-C the whole group goes."""
  os.makedirs(log_dir, exist_ok=True)
  out_path, err_path = os.path.join(log_dir, 'stdout.txt'), os.path.join(log_dir, 'stderr.txt')
  with open(out_path, 'wb') as out, open(err_path, 'wb') as err:
    started = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=settings.PROJECT_DIR,
                            start_new_session=True)
    timer = threading.Timer(timeout, _kill_group, (proc.pid,))
    timer.start()
    try:
      with TreeSampler(proc.pid) as sampler:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
      _kill_group(proc.pid)
      raise
    finally:
      timer.cancel()
    wall = time.time() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
  head = stderr_head(err_path) if proc.returncode else ''
  if proc.returncode and proc.returncode < 0:
    head = f'killed by signal {-proc.returncode} (timeout {timeout:.0f}s?)\n' + head
  return Measurement(wall, proc.returncode, sampler.peak_rss, usage.ru_maxrss * 1024,
                     dict(sampler.workers), head)


def _kill_group(pid: int) -> None:
  """Ends the process group this harness started for one scenario."""
  for sig in (signal.SIGTERM, signal.SIGKILL):
    try:
      os.killpg(pid, sig)
    except OSError:
      return
    time.sleep(2)


# ---------------------------------------------------------------- code version

def code_fingerprint() -> str:
  """Hash of the code a run executes. Taken before every scenario: if someone
  edits the pipeline while the benchmark runs, results mix versions (and the
  'cached' rerun legitimately re-runs components), so the report says so."""
  paths = sorted(glob.glob(os.path.join(settings.PROJECT_DIR, 'pipeline', '**', '*.py'),
                           recursive=True)
                 + glob.glob(os.path.join(settings.PROJECT_DIR, 'modules', '*.py'))
                 + [os.path.join(settings.PROJECT_DIR, 'local_runner.py')])
  digest = hashlib.sha256()
  for path in paths:
    digest.update(path.encode())
    with contextlib.suppress(OSError), open(path, 'rb') as f:
      digest.update(f.read())
  return digest.hexdigest()[:10]


def git_version() -> str:
  """HEAD and whether the work tree differs from it, for the report header."""
  try:
    head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=settings.PROJECT_DIR,
                          capture_output=True, text=True, check=True).stdout.strip()
    # (bench/results is what this run writes, not code it ran)
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--', '.',
                            ':!bench/results'],
                           cwd=settings.PROJECT_DIR, capture_output=True, text=True).stdout.strip()
    return head + (' + uncommitted changes' if dirty else '')
  except (OSError, subprocess.CalledProcessError):
    return 'unknown'


# ---------------------------------------------------------------- scenarios

@dataclasses.dataclass(frozen=True)
class Scenario:
  """One measured command. `name` is what --only takes."""
  name: str
  kind: str                      # 'full', 'stages', 'examplegen', 'pyarrow'
  size: str                      # 'small' or 'big'
  layout: str = 'single'         # 'single' or 'sharded'
  beam_mode: str = 'in_memory'
  beam_workers: Optional[int] = None
  examplegen: Optional[str] = None   # COCO_EXAMPLEGEN (None: project default)
  reuse: Optional[str] = None        # run in this scenario's output dir (cache test)
  what: str = ''

  @property
  def key(self) -> str:
    """Unique per measured command (eg_stock runs at two sizes)."""
    return f'{self.name}@{self.size}'


def scenarios() -> List[Scenario]:
  """Every scenario, in run order: cheap in-process baseline first, then the
  ExampleGen runs, then the long ones."""
  return [
      Scenario('pyarrow', 'pyarrow', 'small', what='pyarrow.csv parse + Python tokenize (in-process)'),
      Scenario('pyarrow', 'pyarrow', 'big', what='pyarrow.csv parse + Python tokenize (in-process)'),
      Scenario('eg_stock', 'examplegen', 'small', examplegen='stock', what='CsvExampleGen only, stock executor'),
      Scenario('eg_stock', 'examplegen', 'big', examplegen='stock', what='CsvExampleGen only, stock executor'),
      Scenario('eg_fast', 'examplegen', 'small', examplegen='fast', what='CsvExampleGen only, fast executor'),
      Scenario('eg_fast', 'examplegen', 'big', examplegen='fast', what='CsvExampleGen only, fast executor'),
      Scenario('cold', 'full', 'small', what='whole pipeline, fresh output (make run equivalent)'),
      Scenario('cached', 'full', 'small', reuse='cold@small', what='the same command again'),
      Scenario('cold_big', 'full', 'big', what='whole pipeline, fresh output'),
      Scenario('beam_in_memory', 'stages', 'big', what='ExampleGen..Transform, DirectRunner in_memory'),
      Scenario('beam_multi_processing', 'stages', 'big', beam_mode='multi_processing', beam_workers=2,
               what='ExampleGen..Transform, DirectRunner multi_processing x2'),
      Scenario('beam_sharded', 'stages', 'big', layout='sharded',
               what=f'ExampleGen..Transform, in_memory on {SHARDS} CSV shards'),
  ]


def select(all_scenarios: List[Scenario], only: Optional[str]) -> List[Scenario]:
  """--only: the named scenarios plus the ones they reuse, in run order."""
  if not only:
    return all_scenarios
  names = {n.strip() for n in only.split(',') if n.strip()}
  unknown = names - {s.name for s in all_scenarios}
  if unknown:
    raise SystemExit(f'unknown scenario(s) {sorted(unknown)}; choose from '
                     f'{sorted({s.name for s in all_scenarios})}')
  keys = {s.key for s in all_scenarios if s.name in names}
  keys |= {s.reuse for s in all_scenarios if s.key in keys and s.reuse}
  return [s for s in all_scenarios if s.key in keys]


@dataclasses.dataclass
class Result:
  scenario: Scenario
  label: str                     # data size label, e.g. '400k'
  rows: int
  status: str = 'ok'             # 'ok', 'FAILED', 'SKIPPED'
  wall: float = 0.0
  peak_rss: int = 0
  ru_maxrss: int = 0
  workers: Dict[int, str] = dataclasses.field(default_factory=dict)
  components: List[metadata.ComponentRun] = dataclasses.field(default_factory=list)
  env: Dict[str, str] = dataclasses.field(default_factory=dict)
  error: str = ''
  output_dir: str = ''
  tokens: int = 0
  executor: str = ''             # CsvExampleGen's executor, as the driver reported it
  code: str = ''                 # code_fingerprint() when the scenario started

  def seconds(self, component: str) -> Optional[float]:
    found = [c.seconds for c in self.components if c.component == component]
    return found[0] if found else None

  @property
  def data_stage_seconds(self) -> Optional[float]:
    """ExampleGen..Transform from ML Metadata; None unless all four ran."""
    found = [self.seconds(c) for c in DATA_STAGES]
    return None if None in found else sum(found)

  @property
  def ok(self) -> bool:
    return self.status == 'ok'


def scenario_env(scenario: Scenario, data_root: str, output_dir: str,
                 profile: Profile) -> Dict[str, str]:
  """The child's environment: the caller's, minus every COCO_* override (the
  benchmark measures the defaults), plus the scenario's settings."""
  env = {k: v for k, v in CALLER_ENV.items() if not k.startswith(settings.ENV_PREFIX)}
  coco = {'COCO_DATA_ROOT': data_root, 'COCO_OUTPUT_DIR': output_dir,
          'COCO_BEAM_MODE': scenario.beam_mode}
  if scenario.beam_workers:
    coco['COCO_BEAM_WORKERS'] = str(scenario.beam_workers)
  if scenario.examplegen:
    coco['COCO_EXAMPLEGEN'] = scenario.examplegen
  if scenario.kind == 'full' and profile.train_steps:
    coco['COCO_TRAIN_STEPS'] = str(profile.train_steps)
  if scenario.kind != 'full':  # a partial run: the data stages, or ExampleGen alone
    coco['COCO_RUN_TO'] = 'CsvExampleGen' if scenario.kind == 'examplegen' else 'Transform'
  env.update(coco)
  return env


def command(scenario: Scenario) -> List[str]:
  """Every scenario runs local_runner.py; partial ones set COCO_RUN_TO (env())."""
  del scenario
  return [sys.executable, LOCAL_RUNNER]


def reported_executor(stdout_path: str) -> str:
  """The `ExampleGen executor: ...` line local_runner.py prints (proof that
  COCO_EXAMPLEGEN took effect)."""
  try:
    with open(stdout_path, errors='replace') as f:
      for line in f:
        if line.startswith('ExampleGen executor:'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return ''


def run_pipeline_scenario(scenario: Scenario, dataset: Dataset, profile: Profile,
                          done: Dict[str, Result]) -> Result:
  """One subprocess run, then its components from the output's ML Metadata."""
  result = Result(scenario, dataset.label, dataset.rows)
  if scenario.reuse:
    base = done.get(scenario.reuse)
    if base is None or not base.ok:
      result.status, result.error = 'SKIPPED', f'needs {scenario.reuse}, which did not succeed'
      return result
    output_dir = base.output_dir
  else:
    output_dir = os.path.join(WORK, profile.name, 'runs', scenario.key.replace('@', '-'))
    shutil.rmtree(output_dir, ignore_errors=True)
  result.output_dir = output_dir
  env = scenario_env(scenario, dataset.root(scenario.layout), output_dir, profile)
  result.env = {k: v for k, v in env.items() if k.startswith(settings.ENV_PREFIX)}
  log_dir = os.path.join(WORK, profile.name, 'logs', scenario.key.replace('@', '-'))
  m = run_measured(command(scenario), env, log_dir)
  result.wall, result.peak_rss, result.ru_maxrss, result.workers = (
      m.wall, m.peak_rss, m.ru_maxrss, m.workers)
  result.executor = reported_executor(os.path.join(log_dir, 'stdout.txt'))
  try:
    store = metadata.open_store(settings.Settings.from_env({'COCO_OUTPUT_DIR': output_dir}).run.metadata_file)
    result.components = metadata.component_runs(store)
  except Exception as error:  # pylint: disable=broad-except
    result.error = f'no ML Metadata: {error}'
  if m.returncode != 0:
    result.status = 'FAILED'
    result.error = '\n'.join(filter(None, [
        m.stderr_head, f'(exit {m.returncode}; stderr: {os.path.join(log_dir, "stderr.txt")})',
        result.error]))
  return result


# Like modules/preprocessing.clean_captions, in plain Python: lowercase, delete
# apostrophes, every run of non-letters/digits ([\W_] in Unicode mode) -> space.
_APOSTROPHES = re.compile("['\u2019]")
_SEPARATORS = re.compile(r'[\W_]+')


def run_pyarrow(scenario: Scenario, dataset: Dataset) -> Result:
  """The near-physical limit for ExampleGen + tokenization on this machine:
  parse the same CSV with pyarrow (quoted newlines allowed) and tokenize every
  caption in this process. No Beam, no TFRecords, no split."""
  import pyarrow.csv as pa_csv  # pylint: disable=g-import-not-at-top
  result = Result(scenario, dataset.label, dataset.rows)
  path = os.path.join(dataset.single, 'captions.csv')
  baseline = psutil.Process().memory_info().rss  # the harness has TFX imported already
  try:
    with TreeSampler(os.getpid(), children=False) as sampler:
      started = time.time()
      table = pa_csv.read_csv(path, parse_options=pa_csv.ParseOptions(newlines_in_values=True))
      parsed = time.time()
      tokens = 0
      for caption in table.column(features.CAPTION_KEY).to_pylist():
        tokens += len(_SEPARATORS.sub(' ', _APOSTROPHES.sub('', caption.lower())).split())
      result.wall = time.time() - started
    result.components = [
        metadata.ComponentRun('pyarrow parse', 'COMPLETE', parsed - started, 0),
        metadata.ComponentRun('Python tokenize', 'COMPLETE', result.wall - (parsed - started), 0)]
    result.peak_rss, result.tokens = max(0, sampler.peak_rss - baseline), tokens
    if table.num_rows != dataset.rows:
      result.status, result.error = 'FAILED', f'parsed {table.num_rows} rows, expected {dataset.rows}'
  except Exception as error:  # pylint: disable=broad-except
    result.status, result.error = 'FAILED', f'{type(error).__name__}: {error}'
  return result


def run_all(selected: List[Scenario], datasets: Dict[str, Dataset],
            profile: Profile, keep: bool) -> List[Result]:
  """Runs the scenarios one at a time (the machine has 2 cores), printing a
  line each; Ctrl-C stops the current one and reports what finished."""
  done: Dict[str, Result] = {}
  pending = list(selected)
  while pending:
    scenario = pending.pop(0)
    dataset = datasets[profile.small if scenario.size == 'small' else profile.big]
    print(f'--- {scenario.name} @{dataset.label}: {scenario.what}', flush=True)
    code = code_fingerprint()
    try:
      if scenario.kind == 'pyarrow':
        result = run_pyarrow(scenario, dataset)
      else:
        result = run_pipeline_scenario(scenario, dataset, profile, done)
    except KeyboardInterrupt:
      print('interrupted: reporting what finished', flush=True)
      for s in [scenario] + pending:
        done[s.key] = Result(s, '', 0, status='SKIPPED', error='interrupted')
      break
    except Exception as error:  # pylint: disable=broad-except
      result = Result(scenario, dataset.label, dataset.rows, status='FAILED',
                      error=f'harness: {type(error).__name__}: {error}')
    result.code = code
    done[scenario.key] = result
    print(one_line(result), flush=True)
    if not keep:
      _drop_outputs(result, pending)
  return list(done.values())


def _drop_outputs(result: Result, pending: List[Scenario]) -> None:
  """Deletes a run's pipeline outputs once no pending scenario reuses them;
  a failed run keeps them (its full log lives there)."""
  if result.ok and result.output_dir and not any(s.reuse == result.scenario.key for s in pending):
    shutil.rmtree(result.output_dir, ignore_errors=True)


# ---------------------------------------------------------------- report

def mb(n: int) -> str:
  return f'{n / 2**20:,.0f}' if n else '-'


def fmt(x: Optional[float], digits: int = 1) -> str:
  return '-' if x is None else f'{x:,.{digits}f}'


def rate(rows: int, seconds: Optional[float]) -> Optional[float]:
  return rows / seconds if rows and seconds else None


def mode_check(result: Result) -> str:
  """Evidence that the Beam mode took effect: SDK worker processes seen."""
  if result.scenario.kind == 'pyarrow':
    return 'in-process'
  n = len(result.workers)
  if result.scenario.beam_mode == 'multi_processing':
    return f'{n} SDK workers ' + ('(ok)' if n else '(NONE: mode not in effect?)')
  return f'{n} SDK workers' + (' (ok)' if n == 0 else ' (UNEXPECTED)')


def one_line(r: Result) -> str:
  if r.status != 'ok':
    return f'{r.scenario.name:<22} {r.label:>5} {r.status}: {r.error.splitlines()[0] if r.error else ""}'
  comps = ', '.join(f'{c.component} {c.seconds:.1f}s{"" if c.state == "COMPLETE" else " " + c.state}'
                    for c in r.components)
  executor = f'  executor {".".join(r.executor.split(".")[-3:-1])}' if r.executor else ''
  return (f'{r.scenario.name:<22} {r.label:>5} {r.wall:7.1f}s  {fmt(rate(r.rows, r.wall), 0):>9} rows/s  '
          f'peak {mb(r.peak_rss):>6} MB  [{comps}]{executor}')


@dataclasses.dataclass
class Check:
  what: str
  value: str
  target: str
  verdict: str   # PASS, FAIL, n/a, info


def _verdict(ok: Optional[bool]) -> str:
  return 'n/a' if ok is None else ('PASS' if ok else 'FAIL')


def checks(results: List[Result], profile: Profile) -> List[Check]:
  """The ratios of issue #4 against their targets."""
  by = {r.scenario.key: r for r in results if r.ok}
  small, big = profile.small, profile.big
  out = []

  cold, cached = by.get('cold@small'), by.get('cached@small')
  ratio = cached.wall / cold.wall if cold and cached else None
  cached_all = cached and cached.components and all(c.state == 'CACHED' for c in cached.components)
  changed = cold and cached and cold.code != cached.code
  out.append(Check(f'cached / cold wall clock ({small})',
                   f'{fmt(ratio, 3)}' + (f' ({fmt(cached.wall)} s / {fmt(cold.wall)} s; '
                                         f'{"all" if cached_all else "NOT all"} components CACHED'
                                         + ('; the code changed between the two runs' if changed else '')
                                         + ')' if ratio else ''),
                   f'<= {CACHED_RATIO_MAX}', _verdict(None if ratio is None else ratio <= CACHED_RATIO_MAX)))

  big_run = by.get('cold_big@big')
  s_small = cold.data_stage_seconds if cold else None
  s_big = big_run.data_stage_seconds if big_run else None
  ratio = s_big / s_small if s_small and s_big else None
  out.append(Check(f'data stages (ExampleGen..Transform) {big} / {small}',
                   f'{fmt(ratio, 2)}' + (f' ({fmt(s_big)} s = {fmt(rate(big_run.rows, s_big), 0)} rows/s; '
                                         f'{fmt(s_small)} s = {fmt(rate(cold.rows, s_small), 0)} rows/s)'
                                         if ratio else ''),
                   f'<= {DATA_STAGES_RATIO_MAX}',
                   _verdict(None if ratio is None else ratio <= DATA_STAGES_RATIO_MAX)))
  if cold and big_run and cold.seconds('Trainer') and big_run.seconds('Trainer'):
    out.append(Check(f'Trainer {big} / {small} (fixed steps)',
                     f'{big_run.seconds("Trainer") / cold.seconds("Trainer"):.2f} '
                     f'({fmt(big_run.seconds("Trainer"))} s / {fmt(cold.seconds("Trainer"))} s)',
                     '~1', 'info'))

  marginal = {}
  for name, component in (('eg_stock', 'CsvExampleGen'), ('eg_fast', 'CsvExampleGen'),
                          ('pyarrow', None)):
    a, b = by.get(f'{name}@small'), by.get(f'{name}@big')
    if not (a and b):
      continue
    ta = a.seconds(component) if component else a.wall
    tb = b.seconds(component) if component else b.wall
    if ta is not None and tb is not None and tb > ta:
      marginal[name] = (b.rows - a.rows) / (tb - ta)
  for name, label in (('eg_stock', 'stock CsvExampleGen'), ('eg_fast', 'fast CsvExampleGen'),
                      ('pyarrow', 'pyarrow parse + tokenize')):
    out.append(Check(f'marginal throughput, {label} (rows/s, ({big} - {small}) / (t{big} - t{small}))',
                     fmt(marginal.get(name), 0), '', 'info' if name in marginal else 'n/a'))
  ratio = (marginal['eg_fast'] / marginal['eg_stock']
           if 'eg_fast' in marginal and 'eg_stock' in marginal else None)
  out.append(Check('ExampleGen marginal throughput fast / stock', fmt(ratio, 2),
                   f'>= {FAST_OVER_STOCK_MIN}',
                   _verdict(None if ratio is None else ratio >= FAST_OVER_STOCK_MIN)))
  for name in ('eg_fast', 'eg_stock'):
    ratio = (marginal[name] / marginal['pyarrow']
             if name in marginal and 'pyarrow' in marginal else None)
    out.append(Check(f'ExampleGen marginal throughput {name[3:]} / pyarrow parse+tokenize',
                     fmt(ratio, 3), '(1 = the physical limit)', 'info' if ratio else 'n/a'))

  modes = [by[k] for k in ('beam_in_memory@big', 'beam_multi_processing@big', 'beam_sharded@big')
           if k in by and by[k].data_stage_seconds]
  if modes:
    fastest = min(modes, key=lambda r: r.data_stage_seconds)
    listing = '; '.join(f'{r.scenario.name[5:]} {r.data_stage_seconds:.1f} s (wall {r.wall:.0f} s)'
                        for r in modes)
    out.append(Check(f'fastest Beam mode on {big} (ExampleGen..Transform seconds)',
                     f'**{fastest.scenario.name[5:]}** ({listing})', 'name it', 'info'))
  else:
    out.append(Check(f'fastest Beam mode on {big}', '-', 'name it', 'n/a'))
  for r in modes:
    evidence = mode_check(r)
    ok = ('(ok)' in evidence)
    out.append(Check(f'mode in effect: {r.scenario.name[5:]}', evidence,
                     '>= 1 SDK worker if multi_processing, else 0', _verdict(ok)))

  note = f' ({profile.train_steps} train steps: quick run, not the bar)' if profile.train_steps else ''
  out.append(Check(f'whole default run on {small}, wall clock{note}',
                   f'{fmt(cold.wall)} s' if cold else '-', f'< {WHOLE_RUN_MAX:.0f} s',
                   _verdict(None if not cold else cold.wall < WHOLE_RUN_MAX)))
  trainer = cold.seconds('Trainer') if cold else None
  out.append(Check(f'Trainer seconds in that run{note}', fmt(trainer), f'<= {TRAINER_MAX:.0f} s',
                   _verdict(None if trainer is None else trainer <= TRAINER_MAX)))
  return out


def summary_table(results: List[Result]) -> List[str]:
  lines = ['| scenario | data | rows | status | wall s | rows/s (wall) | ExampleGen s | data stages s | '
           'rows/s (data stages) | peak RSS tree MB | max process MB (ru_maxrss) | Beam SDK workers |',
           '| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |']
  for r in results:
    s = r.data_stage_seconds
    cached = any(c.state == 'CACHED' for c in r.components)
    layout = f' ({SHARDS} shards)' if r.scenario.layout == 'sharded' else ''
    lines.append(f'| {r.scenario.name} | {r.label}{layout} | {r.rows:,} | {r.status} | {fmt(r.wall)} | '
                 f'{fmt(rate(r.rows, r.wall), 0)} | {fmt(r.seconds("CsvExampleGen"))} | {fmt(s)} | '
                 f'{"cached" if cached else fmt(rate(r.rows, s), 0)} | '
                 f'{mb(r.peak_rss)} | {mb(r.ru_maxrss)} | {mode_check(r) if r.ok else "-"} |')
  return lines


def scenario_section(r: Result) -> List[str]:
  lines = [f'### {r.scenario.name} @ {r.label}: {r.status}', '', r.scenario.what + '.', '']
  if r.env:
    lines += ['Environment: ' + ' '.join(f'`{k}={v}`' for k, v in sorted(r.env.items())
                                         if k not in ('COCO_OUTPUT_DIR',)), '']
  if r.components:
    lines += ['| component | state | seconds | rows/s |', '| --- | --- | ---: | ---: |']
    lines += [f'| {c.component} | {c.state} | {c.seconds:.1f} | '
              f'{fmt(rate(r.rows, c.seconds) if c.state != "CACHED" and c.component != "SchemaGen" else None, 0)} |'
              for c in r.components]
    lines.append('')
  if r.tokens:
    lines += [f'{r.tokens:,} tokens. Peak RSS here is the increase of the harness process.', '']
  if r.executor:
    lines += [f'CsvExampleGen executor (reported by the driver): `{r.executor}`', '']
  if r.workers:
    lines += [f'Beam SDK worker pids: {", ".join(str(p) for p in sorted(r.workers))}', '']
  if r.error:
    lines += ['```', r.error, '```', '']
  return lines


def render_markdown(results: List[Result], found: List[Check], profile: Profile,
                    datasets: Dict[str, Dataset], started: float, load: Sequence[float]) -> str:
  eg_default = settings.DataSettings().example_gen
  lines = [
      f'# Performance benchmark ({datetime.datetime.now():%Y-%m-%d %H:%M}, {profile.name})', '',
      f'Command: `.venv/bin/python bench/run.py{" --quick" if profile.name == "quick" else ""}` '
      f'({os.cpu_count()} cores; load average at start {load[0]:.2f}, at end '
      f'{os.getloadavg()[0]:.2f}; harness {time.time() - started:.0f} s in all). '
      f'Code: {git_version()}.', '',
      'Data: ' + '; '.join(f'{d.label} = {d.rows:,} captions' for d in datasets.values())
      + f' (x{COPIES} with ids shifted by {ID_STRIDE:,} per copy), one CSV or {SHARDS} shards. '
      f'Seconds per component and cache state come from ML Metadata; wall clock is the whole '
      f'command; peak RSS sums the process tree (sampled every {POLL_SECONDS} s). '
      f'ExampleGen executor where not set: project default `{eg_default}`.', '']
  codes = {}
  for r in results:
    if r.code:
      codes.setdefault(r.code, []).append(f'{r.scenario.name}@{r.label}')
  if len(codes) > 1:
    lines += ['**Warning: the code changed while the benchmark ran**; scenarios by code '
              'fingerprint: ' + '; '.join(f'`{c}`: {", ".join(n)}' for c, n in codes.items()), '']
  if profile.train_steps:
    lines += [f'**Quick run**: full-pipeline scenarios use `COCO_TRAIN_STEPS={profile.train_steps}`; '
              'the whole-run and Trainer bars are not meaningful here.', '']
  lines += ['## Targets', '', '| measure | value | target | |', '| --- | --- | --- | --- |']
  lines += [f'| {c.what} | {c.value} | {c.target} | {c.verdict} |' for c in found]
  lines += ['', '## Scenarios', ''] + summary_table(results) + ['']
  for r in results:
    lines += scenario_section(r)
  return '\n'.join(lines) + '\n'


def render_chart(results: List[Result], path: str, title: str) -> None:
  """Stacked horizontal bars: component seconds per scenario, plus the rest of
  the wall clock (process start, imports, orchestration) as 'overhead'."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  shown = [r for r in results if r.ok]
  if not shown:
    return
  names = []
  for r in shown:
    for c in r.components:
      if c.component not in names:
        names.append(c.component)
  names.append('overhead')
  colors = dict(zip(names, plt.get_cmap('tab10').colors * 2))
  colors['overhead'] = '#cccccc'
  fig, ax = plt.subplots(figsize=(12, 0.5 * len(shown) + 2))
  labels = [f'{r.scenario.name} @{r.label}' for r in shown]
  for i, r in enumerate(shown):
    left = 0.0
    for c in r.components:
      ax.barh(i, c.seconds, left=left, color=colors[c.component],
              hatch='//' if c.state == 'CACHED' else None, edgecolor='white')
      left += c.seconds
    if r.wall > left:
      ax.barh(i, r.wall - left, left=left, color=colors['overhead'], edgecolor='white')
    ax.text(r.wall, i, f' {r.wall:.0f}s', va='center', fontsize=8)
  ax.set_yticks(range(len(shown)), labels)
  ax.invert_yaxis()
  ax.set_xlabel('seconds (components from ML Metadata; hatched = cached)')
  ax.set_title(title)
  handles = [plt.Rectangle((0, 0), 1, 1, color=colors[n]) for n in names]
  ax.legend(handles, names, fontsize=8, loc='upper left', bbox_to_anchor=(1.01, 1))
  ax.set_xlim(0, max(r.wall for r in shown) * 1.08)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


# ---------------------------------------------------------------- main

def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=__doc__.split('\n\n', 1)[1])
  parser.add_argument('--quick', action='store_true', help='2.5k/40k rows, 50 train steps (smoke test)')
  parser.add_argument('--only', default=None, help='comma-separated scenario names')
  parser.add_argument('--keep', action='store_true', help='keep pipeline outputs')
  parser.add_argument('--annotations', default=VAL2017, help='captions JSON (default: %(default)s)')
  args = parser.parse_args(argv)
  profile = QUICK if args.quick else FULL
  selected = select(scenarios(), args.only)
  if not os.path.exists(args.annotations):
    print(f'error: {args.annotations} is absent', file=sys.stderr)
    return 2
  started, load = time.time(), os.getloadavg()
  datasets = prepare(profile, args.annotations)
  results = run_all(selected, datasets, profile, args.keep)
  found = checks(results, profile)

  os.makedirs(RESULTS, exist_ok=True)
  # Smoke tests and subsets never overwrite the day's full result.
  stem = (datetime.date.today().isoformat() + ('-quick' if profile.train_steps else '')
          + ('-subset' if args.only else ''))
  md_path, png_path = os.path.join(RESULTS, stem + '.md'), os.path.join(RESULTS, stem + '.png')
  try:
    render_chart(results, png_path, f'coco-captions-tfx benchmark ({stem}, {os.cpu_count()} cores)')
  except Exception as error:  # pylint: disable=broad-except
    print(f'chart failed: {type(error).__name__}: {error}', file=sys.stderr)
  with open(md_path, 'w') as f:
    f.write(render_markdown(results, found, profile, datasets, started, load)
            + f'\n![component seconds per scenario]({os.path.basename(png_path)})\n')

  print('\n' + '\n'.join(summary_table(results)))
  if len({r.code for r in results if r.code}) > 1:
    print('\nWARNING: the code changed while the benchmark ran (see the report)')
  print('\nTargets:')
  for c in found:
    print(f'  {c.verdict:<5} {c.what}: {c.value}  (target {c.target})' if c.target
          else f'  {c.verdict:<5} {c.what}: {c.value}')
  print(f'\nwrote {md_path} and {png_path} ({time.time() - started:.0f} s)')
  return 0 if all(r.ok for r in results) else 1


if __name__ == '__main__':
  sys.exit(main())
