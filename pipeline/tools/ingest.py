"""Official COCO caption annotations -> the pipeline's CSV.

    python -m pipeline.tools.ingest SOURCE [-o OUT.csv[.gz]] [--max-images N] [--member NAME]

SOURCE is a captions JSON (2014 or 2017, e.g. captions_val2017.json), or the
official annotations zip (e.g. annotations_trainval2017.zip; every
`captions_*.json` inside is converted unless --member picks one), as a local
path or an http(s) URL (downloaded to a temporary file; the only download the
project ever does, and only when asked).

Output columns: image_id,id,caption,url,file_name,license (see
`modules.features.RAW_COLUMNS`). Captions are written unchanged: commas,
quotes, embedded newlines, trailing spaces and non-ASCII text survive, quoted
the way CsvExampleGen reads them. `url` is the image's `coco_url`, `license`
the name of its license id ('' when the image names none).
"""

import argparse
import contextlib
import csv
import gzip
import io
import json
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, Sequence

from modules import features
from pipeline.settings import Settings


class IngestError(ValueError):
  """Bad input, with the file and the place in it."""


@contextlib.contextmanager
def local_copy(source: str) -> Iterator[str]:
  """Yields a local path for `source`, downloading http(s) URLs to a temp file."""
  if not source.startswith(('http://', 'https://')):
    if not os.path.exists(source):
      raise IngestError(f'{source}: no such file')
    yield source
    return
  suffix = '.zip' if source.lower().split('?')[0].endswith('.zip') else '.json'
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'download' + suffix)
    try:
      with urllib.request.urlopen(source, timeout=60) as response, open(path, 'wb') as out:
        shutil.copyfileobj(response, out)
    except OSError as e:
      raise IngestError(f'{source}: download failed: {e}') from None
    yield path


def _load_json(stream: IO[bytes], name: str) -> Dict[str, Any]:
  try:
    data = json.load(stream)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise IngestError(f'{name}: not valid JSON: {e}') from None
  for key in ('images', 'annotations'):
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
      raise IngestError(f'{name}: not a COCO captions file (no "{key}" list)')
  return data


def annotation_files(path: str, member: Optional[str] = None) -> Iterator[Dict[str, Any]]:
  """Yields each captions annotation dict in a JSON file or annotations zip."""
  if not zipfile.is_zipfile(path):
    with open(path, 'rb') as f:
      yield _load_json(f, path)
    return
  with zipfile.ZipFile(path) as archive:
    names = sorted(n for n in archive.namelist()
                   if os.path.basename(n).startswith('captions_') and n.endswith('.json'))
    if member:
      names = [n for n in names if n == member or os.path.basename(n) == member]
    if not names:
      raise IngestError(f'{path}: no captions_*.json member'
                        + (f' named {member!r}' if member else ''))
    for name in names:
      with archive.open(name) as f:
        yield _load_json(f, f'{path}:{name}')


def caption_rows(data: Dict[str, Any], name: str = '<annotations>',
                 max_images: Optional[int] = None) -> Iterator[List[Any]]:
  """Rows of CSV_COLUMNS for one annotations dict, in annotation order.

  With `max_images`, only the captions of the N smallest image ids are kept
  (a deterministic sample that keeps every caption of each image).
  """
  licenses = {lic.get('id'): lic.get('name', '') for lic in data.get('licenses', [])}
  images = {}
  for i, image in enumerate(data['images']):
    if 'id' not in image:
      raise IngestError(f'{name}: images[{i}] has no "id"')
    images[image['id']] = image
  keep = set(sorted(images)[:max_images]) if max_images else None
  for i, ann in enumerate(data['annotations']):
    for field in ('image_id', 'id', 'caption'):
      if field not in ann:
        raise IngestError(f'{name}: annotations[{i}] has no "{field}"')
    image = images.get(ann['image_id'])
    if image is None:
      raise IngestError(f'{name}: annotations[{i}] (id {ann["id"]}) refers to '
                        f'image_id {ann["image_id"]}, which is not in "images"')
    if keep is not None and ann['image_id'] not in keep:
      continue
    yield [ann['image_id'], ann['id'], ann['caption'], image.get('coco_url', ''),
           image.get('file_name', ''), licenses.get(image.get('license'), '')]


def write_csv(rows: Iterable[Sequence[Any]], outs: Sequence[IO[str]]) -> int:
  """Writes the header to every output and deals rows round-robin over them.

  Strings are quoted, ids bare; the header stays unquoted because
  CsvExampleGen takes header names verbatim. Returns the row count.
  """
  writers = []
  for out in outs:
    out.write(','.join(features.RAW_COLUMNS) + '\n')
    writers.append(csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator='\n'))
  count = 0
  for count, row in enumerate(rows, 1):
    writers[(count - 1) % len(writers)].writerow(row)
  return count


GZIP_SUFFIX, GZIP_CSV = '.gz', '.csv.gz'


def is_gzip(path: str) -> bool:
  """The CSV reader's rule (pipeline/csv_input/reader.py): a name ending in
  .gz, in any case, is gzip-compressed CSV."""
  return path.lower().endswith(GZIP_SUFFIX)


def partial_path(path: str) -> str:
  """Where `path` is written until it is complete: beside it, compressed like it."""
  return path + '.partial' + (GZIP_SUFFIX if is_gzip(path) else '')


def shard_paths(out_path: str, shards: int) -> List[str]:
  """`captions.csv` -> [captions.csv] or [captions-00000-of-00004.csv, ...]."""
  if shards <= 1:
    return [out_path]
  stem, ext = os.path.splitext(out_path)
  if out_path.lower().endswith(GZIP_CSV):
    stem, ext = out_path[:-len(GZIP_CSV)], out_path[-len(GZIP_CSV):]
  return [f'{stem}-{i:05d}-of-{shards:05d}{ext or ".csv"}' for i in range(shards)]


@contextlib.contextmanager
def open_output(path: str) -> Iterator[IO[str]]:
  """A text file to write the CSV to; gzip-compressed when the name ends in
  .gz, with no name or time in the gzip header so the same input always
  gives the same bytes (data/ is committed)."""
  if not is_gzip(path):
    with open(path, 'w', encoding='utf-8', newline='') as f:
      yield f
    return
  with open(path, 'wb') as raw, gzip.GzipFile(filename='', mode='wb', fileobj=raw,
                                               mtime=0) as packed, \
      io.TextIOWrapper(packed, encoding='utf-8', newline='') as f:
    yield f


def ingest(source: str, out_path: str, max_images: Optional[int] = None,
           member: Optional[str] = None, shards: int = 1) -> int:
  """Converts `source` to CSV at `out_path` (or `shards` files beside it);
  returns the number of captions."""
  with local_copy(source) as path:
    rows = (row for data in annotation_files(path, member)
            for row in caption_rows(data, name=source, max_images=max_images))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    paths = shard_paths(out_path, shards)
    with contextlib.ExitStack() as stack:
      outs = [stack.enter_context(open_output(partial_path(p))) for p in paths]
      count = write_csv(rows, outs)
    for p in paths:  # never leave a half-written CSV where the pipeline reads
      os.replace(partial_path(p), p)
  return count


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('source', help='captions JSON or annotations zip: path or http(s) URL')
  parser.add_argument('-o', '--output', default=os.path.join(Settings.from_env().run.data_root, 'captions.csv'),
                      help='CSV to write; a name ending in .gz writes it gzip-compressed (default: %(default)s)')
  parser.add_argument('--max-images', type=int, default=None,
                      help='keep only the captions of the N smallest image ids')
  parser.add_argument('--member', default=None, help='zip member to convert (default: all captions_*.json)')
  parser.add_argument('--shards', type=int, default=1,
                      help='write N CSV files (rows dealt round-robin) instead of one')
  args = parser.parse_args(argv)
  try:
    count = ingest(args.source, args.output, args.max_images, args.member, args.shards)
  except IngestError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  print(f'wrote {count} captions to {args.output}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
