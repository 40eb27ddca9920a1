"""Counts and throughput of the image stage (pipeline/images/) on this machine.

    .venv/bin/python bench/images.py [--copies K] [--size N]

1. Counts on ../shared/data/coco-mini (159 real COCO images, their official
   captions, the default allowed licenses): kept / filtered by license / failed
   by reason, from the standalone command's summary.json.
2. Throughput: the same images with every license allowed, the caption rows
   repeated K times with fresh image and caption ids (default 10: 1,590 images,
   ~8k captions), through `python -m pipeline.tools.images` in a fresh process per
   Beam mode (in_memory, multi_processing x2). Images/s = images kept / seconds
   of the Beam run (imports and process start excluded; also given with them).
   The image files are read from the page cache after the first pass: this
   measures decoding, resizing, encoding and Beam, not a disk or network.
3. A reference without Beam: read + decode + resize + encode in one Python loop.

Writes bench/results/images-<date>.md; work files go to bench/work/images.
"""

import argparse
import csv
import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
import warnings  # noqa: E402
warnings.filterwarnings('ignore')

from modules import constants  # noqa: E402
from pipeline import settings  # noqa: E402
from pipeline.artifacts import files  # noqa: E402
from pipeline.images import records  # noqa: E402
from pipeline.tools import ingest  # noqa: E402

COCO_MINI = os.path.join(settings.PROJECT_DIR, '..', 'shared', 'data', 'coco-mini')
WORK = os.path.join(HERE, 'work', 'images')
SPLITS = ('train2017', 'val2017')
LOCATION = os.path.join(COCO_MINI, settings.IMAGE_FOLDER_PLACEHOLDER)


def write_results(name: str, lines) -> str:
  """bench/results/<name>-<today>.md; returns its path."""
  os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
  path = os.path.join(HERE, 'results', f'{name}-{datetime.date.today().isoformat()}.md')
  with open(path, 'w') as f:
    f.write('\n'.join(lines))
  print(f'wrote {path}')
  return path


def prepare_captions() -> str:
  """The official caption annotations of coco-mini -> one CSV per split."""
  out = os.path.join(WORK, 'captions')
  for split in SPLITS:
    ingest.ingest(os.path.join(COCO_MINI, 'annotations', f'captions_{split}.json'),
                  os.path.join(out, f'{split}.csv'))
  return out


def scale_captions(captions: str, copies: int) -> str:
  """Every row `copies` times, each copy with fresh image and caption ids (same
  files), so each copy is a separate image to the stage."""
  out = os.path.join(WORK, f'captions_x{copies}')
  os.makedirs(out, exist_ok=True)
  for path in sorted(glob.glob(os.path.join(captions, '*.csv'))):
    with open(path, newline='', encoding='utf-8') as f:
      rows = list(csv.reader(f))[1:]
    scaled = [[int(r[0]) + k * 10_000_000, int(r[1]) + k * 100_000_000] + r[2:]
              for k in range(copies) for r in rows]
    with open(os.path.join(out, os.path.basename(path)), 'w', newline='', encoding='utf-8') as f:
      ingest.write_csv(scaled, [f])
  return out


def licenses_in(captions: str):
  names = set()
  for path in glob.glob(os.path.join(captions, '*.csv')):
    with open(path, newline='', encoding='utf-8') as f:
      names |= {row['license'] for row in csv.DictReader(f) if row['license']}
  return sorted(names)


def run_stage(captions: str, output: str, size: int, env_extra: dict) -> dict:
  """`python -m pipeline.tools.images` in a fresh process; its summary.json plus wall time."""
  shutil.rmtree(output, ignore_errors=True)
  env = dict(os.environ, **env_extra)
  start = time.time()
  result = subprocess.run(
      [sys.executable, '-m', 'pipeline.tools.images', '--captions', captions,
       '--images', LOCATION, '--output', output, '--size', str(size)],
      env=env, capture_output=True, text=True, cwd=settings.PROJECT_DIR)
  wall = time.time() - start
  if result.returncode != 0:
    raise RuntimeError(f'stage failed:\n{result.stdout}\n{result.stderr[-3000:]}')
  with open(files.image_summary_path(output)) as f:
    summary = json.load(f)
  summary['wall'] = wall
  summary['stdout'] = result.stdout.strip().splitlines()[0]
  return summary


def loop_reference(size: int) -> dict:
  """Read + decode + resize + encode of every coco-mini image, no Beam."""
  paths = sorted(glob.glob(os.path.join(COCO_MINI, 'val2017', '*.jpg')))
  records.resize_image(open(paths[0], 'rb').read(), size)  # warm up TensorFlow
  start = time.time()
  for path in paths:
    records.resize_image(records.read_image_bytes(path, records.HTTP_TIMEOUT_SECONDS), size)
  seconds = time.time() - start
  return {'images': len(paths), 'seconds': seconds}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--copies', type=int, default=10)
  parser.add_argument('--size', type=int, default=constants.IMAGE_SIZE)
  args = parser.parse_args()
  if not os.path.isdir(COCO_MINI):
    print(f'{COCO_MINI} is absent', file=sys.stderr)
    return 2
  clean_env = {'COCO_BEAM_MODE': 'in_memory', 'COCO_IMAGE_LICENSES': ''}
  captions = prepare_captions()
  counts = run_stage(captions, os.path.join(WORK, 'out_counts'), args.size, clean_env)
  print(counts['summary'])

  scaled = scale_captions(captions, args.copies)
  all_licenses = ','.join(licenses_in(captions))
  modes = {
      'in_memory': dict(clean_env, COCO_IMAGE_LICENSES=all_licenses),
      'multi_processing x2': dict(clean_env, COCO_IMAGE_LICENSES=all_licenses,
                                  COCO_BEAM_MODE='multi_processing', COCO_BEAM_WORKERS='2'),
  }
  throughput = {}
  for name, env in modes.items():
    result = run_stage(scaled, os.path.join(WORK, 'out_scaled'), args.size, env)
    throughput[name] = result
    print(f'{name}: {result["kept_images"]} images in {result["seconds"]:.1f}s '
          f'({result["kept_images"] / result["seconds"]:.1f} images/s; '
          f'{result["wall"]:.1f}s with process start)')
  reference = loop_reference(args.size)
  print(f'loop without Beam: {reference["images"] / reference["seconds"]:.1f} images/s')

  date = datetime.date.today().isoformat()
  load = os.getloadavg()
  lines = [
      f'# Image stage, {date}',
      '',
      f'`bench/images.py --copies {args.copies} --size {args.size}` on {os.cpu_count()} cores '
      f'(load average at the end {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}: the machine is '
      'shared, so figures can vary).',
      '',
      '## Counts on coco-mini (default licenses)',
      '',
      f'`{counts["summary"]}`',
      '',
      '| | captions | images |',
      '| --- | ---: | ---: |',
      f'| kept | {counts["kept_captions"]} | {counts["kept_images"]} |',
      f'| filtered by license | {counts["filtered_license_captions"]} | |',
  ] + [f'| failed: {r} | {counts["failed_captions"][r]} | {counts["failed_images"][r]} |'
       for r in records.FAILURE_REASONS] + [
      '',
      f'## Throughput ({args.size}x{args.size} JPEG out, every license allowed, '
      f'rows x{args.copies})',
      '',
      '| Beam mode | images | captions | Beam run s | images/s | with process start s |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
  ] + [f'| {name} | {r["kept_images"]} | {r["kept_captions"]} | {r["seconds"]:.1f} | '
       f'{r["kept_images"] / r["seconds"]:.1f} | {r["wall"]:.1f} |'
       for name, r in throughput.items()] + [
      f'| (no Beam: one Python loop) | {reference["images"]} | | {reference["seconds"]:.1f} | '
      f'{reference["images"] / reference["seconds"]:.1f} | |',
      '',
  ]
  write_results('images', lines)
  return 0


if __name__ == '__main__':
  sys.exit(main())
