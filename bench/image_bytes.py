"""Bytes and seconds of the image path through Transform, and a paper
projection to COCO train2017 (issue 13).

    .venv/bin/python bench/image_bytes.py [--copies 16 64] [--before REV [--before-copies 4 16]]

Data: ../shared/data/coco-mini's 159 real images with every license allowed,
their official captions repeated K times with fresh image and caption ids
(`scale_captions` of bench/images.py), so each copy is a separate image.

Each size runs the local pipeline with images on up to Transform
(`COCO_RUN_TO=Transform`, cache off, the in-memory DirectRunner) in a fresh
process, and reads back:
- JPEG bytes per caption: the resized JPEG every ImageExampleGen example
  carries (`image`), summed over the captions, divided by the captions;
- transformed bytes per caption, two ways, each with its ratio to the JPEG
  bytes (issue 13 asks for <= 1.2): the serialized tf.Examples (what the
  Trainer parses; independent of compression and order), and Transform's
  `transformed_examples` on disk (gzipped TFRecords, as Transform writes
  them: an image's five captions usually sit together, and gzip's 32 KB
  window then stores their identical JPEG about once);
- Transform's and ImageExampleGen's seconds (ML Metadata: execution created ->
  last updated), and what the transformed `image` feature holds.

`--before REV` runs the same from a git worktree of REV (for example the last
commit whose `preprocessing_fn` wrote float32 pixels) with this checkout's
venv, for a before/after table, at `--before-copies` (smaller by default:
float pixels are 30x the bytes).

The projection to train2017 (591,753 captions of 118,287 images) is arithmetic
on the measured numbers: disk = bytes per caption x captions; time on one
machine = the fixed part + the marginal seconds per caption (from the two
sizes) x captions; on Dataflow, the marginal rate x the worker's vCPUs (one
SDK process per vCPU; the in-memory DirectRunner used here runs one thread) x
N workers, plus the fixed part and an assumed 4 minutes of worker start-up.

Writes bench/results/image-bytes-<date>.md; work files go to bench/work/image_bytes.
"""

import argparse
import datetime
import glob
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import images as image_bench  # noqa: E402  (bench/images.py: the coco-mini data)
import tensorflow as tf  # noqa: E402

from modules import features  # noqa: E402
from pipeline import settings  # noqa: E402
from pipeline.artifacts import files, metadata  # noqa: E402

WORK = os.path.join(HERE, 'work', 'image_bytes')
TRAIN2017_CAPTIONS = 591_753   # captions_train2017.json's annotations
TRAIN2017_IMAGES = 118_287
DATAFLOW_STARTUP_SECONDS = 240  # assumed: worker VMs booting and pulling the image
DATAFLOW_WORKER_COUNTS = (1, 10, 50)


def records(uri: str):
  """(serialized size, tf.Example) of every record of every split of an Examples artifact."""
  for split in files.split_dirs(uri):
    for raw in files.read_records(uri, split):
      yield len(raw), tf.train.Example.FromString(raw)


def disk_bytes(directory: str) -> int:
  return sum(os.path.getsize(p) for p in glob.glob(os.path.join(directory, '**', '*'),
                                                  recursive=True) if os.path.isfile(p))


def image_kind(example: tf.train.Example) -> str:
  """What the transformed `image` feature holds: 'JPEG bytes' or 'N floats'."""
  feature = example.features.feature[features.TRANSFORMED_IMAGE_KEY]
  if feature.float_list.value:
    return f'{len(feature.float_list.value)} floats'
  return 'JPEG bytes' if feature.bytes_list.value else 'nothing'


def run_to_transform(checkout: str, captions: str, output_dir: str, licenses: str) -> dict:
  """The pipeline up to Transform from `checkout`, in a fresh process; its numbers."""
  shutil.rmtree(output_dir, ignore_errors=True)
  env = dict(os.environ, COCO_OUTPUT_DIR=output_dir, COCO_DATA_ROOT=captions, COCO_IMAGES='1',
             COCO_IMAGE_DIR=image_bench.LOCATION, COCO_IMAGE_LICENSES=licenses,
             COCO_RUN_TO='Transform', COCO_CACHE='0', COCO_BEAM_MODE='in_memory')
  env.pop('COCO_METADATA_PATH', None)
  start = time.time()
  result = subprocess.run([sys.executable, 'local_runner.py'], cwd=checkout, env=env,
                          capture_output=True, text=True)
  wall = time.time() - start
  if result.returncode != 0:
    raise RuntimeError(f'run in {checkout} failed:\n{result.stdout}\n{result.stderr[-3000:]}')
  run = metadata.load_run(settings.Settings.from_env(env).run.metadata_file)
  seconds = {r.component: r.seconds for r in run.components}
  captions_n, jpeg_bytes = 0, 0
  for _, example in records(run.output('ImageExampleGen', 'examples')):
    captions_n += 1
    jpeg_bytes += len(example.features.feature[features.IMAGE_KEY].bytes_list.value[0])
  transformed = run.output('Transform', 'transformed_examples')
  serialized, kinds = 0, set()
  for size, example in records(transformed):
    serialized += size
    kinds.add(image_kind(example))
  return {'captions': captions_n, 'jpeg_bytes': jpeg_bytes,
          'serialized_bytes': serialized, 'transformed_bytes': disk_bytes(transformed),
          'image_examples_bytes': disk_bytes(run.output('ImageExampleGen', 'examples')),
          'transform_seconds': seconds['Transform'],
          'image_gen_seconds': seconds['ImageExampleGen'], 'wall': wall,
          'image': ', '.join(sorted(kinds))}


def worktree(rev: str) -> str:
  """A git worktree of `rev` under the work directory (made once per rev)."""
  path = os.path.join(WORK, f'checkout-{rev}')
  if not os.path.isdir(path):
    subprocess.run(['git', 'worktree', 'add', '--detach', path, rev],
                   cwd=settings.PROJECT_DIR, check=True, capture_output=True)
  return path


def marginal(runs, key: str) -> tuple:
  """(fixed seconds, seconds per caption) of a stage (`key`: its seconds in a
  run) from the smallest and the largest run."""
  small, large = runs[0], runs[-1]
  if large['captions'] == small['captions']:
    return 0.0, large[key] / large['captions']
  rate = (large[key] - small[key]) / (large['captions'] - small['captions'])
  return max(0.0, small[key] - rate * small['captions']), rate


def table(label: str, runs) -> list:
  lines = [f'### {label}', '',
           '| copies | captions | image in transformed examples | JPEG B/caption | '
           'transformed B/caption, serialized | ratio | on disk (gzip) | ratio | '
           'ImageExampleGen output on disk B/caption | Transform s | ImageExampleGen s | wall s |',
           '| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |']
  for r in runs:
    jpeg = r['jpeg_bytes'] / r['captions']
    serialized = r['serialized_bytes'] / r['captions']
    per = r['transformed_bytes'] / r['captions']
    lines.append(f"| {r['copies']} | {r['captions']:,} | {r['image']} | {jpeg:,.0f} "
                 f"| {serialized:,.0f} | {serialized / jpeg:.2f} | {per:,.0f} "
                 f"| {per / jpeg:.2f} | {r['image_examples_bytes'] / r['captions']:,.0f} "
                 f"| {r['transform_seconds']:.1f} | {r['image_gen_seconds']:.1f} "
                 f"| {r['wall']:.1f} |")
  return lines + ['']


STAGES = (('Transform', 'transform_seconds'),
          ('ImageExampleGen (images read from the page cache)', 'image_gen_seconds'))


def projection(label: str, runs, vcpus: int) -> list:
  large = runs[-1]
  per = large['transformed_bytes'] / large['captions']
  serialized = large['serialized_bytes'] / large['captions']
  gen = large['image_examples_bytes'] / large['captions']
  gb = lambda bytes_per_caption: f'{bytes_per_caption * TRAIN2017_CAPTIONS / 1e9:,.1f} GB'
  lines = [f'### Projection to train2017 ({TRAIN2017_CAPTIONS:,} captions of '
           f'{TRAIN2017_IMAGES:,} images), {label}', '',
           f'Disk: transformed examples {gb(per)} (gzip; {gb(serialized)} serialized, what the '
           f'Trainer parses); ImageExampleGen examples {gb(gen)}.', '',
           '| stage | fixed s | ms per caption | this machine (one core) | '
           + ' | '.join(f'Dataflow {n} x {vcpus} vCPU' for n in DATAFLOW_WORKER_COUNTS) + ' |',
           '| --- | ---: | ---: | ---: | ' + ' | '.join('---:' for _ in DATAFLOW_WORKER_COUNTS)
           + ' |']
  for name, key in STAGES:
    fixed, rate = marginal(runs, key)
    dataflow = [DATAFLOW_STARTUP_SECONDS + fixed + rate * TRAIN2017_CAPTIONS / (vcpus * n)
                for n in DATAFLOW_WORKER_COUNTS]
    lines.append(f'| {name} | {fixed:.1f} | {rate * 1000:.3f} | '
                 f'{(fixed + rate * TRAIN2017_CAPTIONS) / 60:,.1f} min | '
                 + ' | '.join(f'{s / 60:,.1f} min' for s in dataflow) + ' |')
  return lines + ['', f'Dataflow: {DATAFLOW_STARTUP_SECONDS // 60} min of worker start-up '
                  'assumed; one SDK process per vCPU at the rate measured here.', '']


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--copies', type=int, nargs='+', default=[16, 64])
  parser.add_argument('--before', help='a git revision to measure as "before"')
  parser.add_argument('--before-copies', type=int, nargs='+', default=[4, 16])
  parser.add_argument('--vcpus', type=int, default=4,
                      help='vCPUs per Dataflow worker (default n1-standard-4)')
  args = parser.parse_args()
  if not os.path.isdir(image_bench.COCO_MINI):
    print(f'{image_bench.COCO_MINI} is absent', file=sys.stderr)
    return 2
  image_bench.WORK = WORK
  captions = image_bench.prepare_captions()
  licenses = ','.join(image_bench.licenses_in(captions))
  checkouts = {'after (this checkout)': (settings.PROJECT_DIR, args.copies)}
  if args.before:
    checkouts = {f'before ({args.before})': (worktree(args.before), args.before_copies),
                 **checkouts}
  out = [f'# Image bytes and Transform seconds, {datetime.date.today()}', '',
         f'`bench/image_bytes.py --copies {" ".join(map(str, args.copies))}'
         + (f' --before {args.before} --before-copies {" ".join(map(str, args.before_copies))}`'
            if args.before else '`')
         + f' on {os.cpu_count()} cores; coco-mini x copies, every license allowed.', '']
  for label, (checkout, sizes) in checkouts.items():
    runs = []
    for copies in sorted(sizes):
      scaled = image_bench.scale_captions(captions, copies)
      run = run_to_transform(checkout, scaled, os.path.join(WORK, 'runs', f'{len(runs)}'),
                             licenses)
      run['copies'] = copies
      runs.append(run)
      print(f'{label} x{copies}: {run["captions"]} captions, image {run["image"]}, '
            f'{run["serialized_bytes"] / run["captions"]:,.0f} serialized and '
            f'{run["transformed_bytes"] / run["captions"]:,.0f} on-disk transformed B/caption vs '
            f'{run["jpeg_bytes"] / run["captions"]:,.0f} JPEG B/caption, '
            f'Transform {run["transform_seconds"]:.1f}s', flush=True)
    out += table(label, runs) + projection(label, runs, args.vcpus)
  load = os.getloadavg()
  out.append(f'Load average at the end {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} '
             '(the machine is shared, so seconds can vary).')
  image_bench.write_results('image-bytes', out)
  return 0


if __name__ == '__main__':
  sys.exit(main())
