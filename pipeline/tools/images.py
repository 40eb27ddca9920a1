"""The image stage: caption rows + images -> image-caption records, as a Beam job.

    python -m pipeline.tools.images --captions CSV_OR_DIR --images DIR|gs://PREFIX|url \\
        --output DIR [--format tfrecord|avro] [--size N]

The job the Beam/Kubeflow COCO example runs by hand before training, as a
tested stage (pipeline/images/): the caption CSVs written by
`pipeline.tools.ingest` (a file, or every file of a directory) and the images
-> OUTPUT/images-*.tfrecord.gz (or .avro), OUTPUT/dead_letter.csv (one row per
caption whose image failed, with the reason) and OUTPUT/summary.json; the run
ends with one summary line. Caption rows are read and checked as the
pipeline's CsvExampleGen reads them; a row it would reject stops the run with
its file, line and column.

Defaults come from the settings (`pipeline.settings`): the image size
(COCO_IMAGE_SIZE), the allowed licenses (COCO_IMAGE_LICENSES), the HTTP timeout
(COCO_IMAGE_HTTP_TIMEOUT) and the Beam runner (COCO_BEAM_MODE: DirectRunner
locally, DataflowRunner with `dataflow`; see pipeline/beam_args.py).
TensorFlow's and Beam's logs stay quiet unless COCO_VERBOSE=1.

Image location: a directory or gs:// prefix holding each row's `file_name`; a
`{folder}` in it is replaced by the folder of the row's COCO URL (train2017,
val2017, ...), so `.../coco/{folder}` reads COCO's own layout; `url` fetches
each row's `url` over HTTP(S).
"""

import argparse
import logging
import os
import sys
import warnings
from typing import List, Optional

from modules import constants
from pipeline import beam_args as beam_args_lib
from pipeline.artifacts import files
from pipeline.orchestration import workers
from pipeline.settings import Settings, SettingsError


def quiet_by_default(verbose: bool) -> None:
  """The command prints its summary; TensorFlow's and the GCP clients'
  import-time chatter stays out unless COCO_VERBOSE=1 (call this before they
  are imported)."""
  if verbose:
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  warnings.filterwarnings('ignore')
  logging.getLogger('apache_beam').setLevel(logging.ERROR)


def main(argv: Optional[List[str]] = None, settings: Optional[Settings] = None) -> int:
  """The command; `settings` default: Settings.from_env()."""
  # TensorFlow and Beam load here, after `__main__`'s quiet_by_default.
  from pipeline.images import records, transforms  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      epilog='The Beam runner follows COCO_BEAM_MODE (in_memory, multi_processing, portable, '
             'dataflow) as everywhere else; see pipeline/beam_args.py.',
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--captions', required=True,
                      help='caption CSV from pipeline.tools.ingest, or a directory (every file '
                           'is read)')
  parser.add_argument('--images', required=True,
                      help='image directory or gs:// prefix ({folder} = the URL\'s folder, e.g. '
                           'val2017), or "url" to fetch each row\'s url')
  parser.add_argument('--output', required=True, help='output directory (local or gs://)')
  parser.add_argument('--format', choices=transforms.FORMATS, default='tfrecord',
                      help='tf.Example TFRecords (default) or Avro {id, caption, image}')
  parser.add_argument('--size', type=int, default=None,
                      help=f'output images are SIZE x SIZE (default {constants.IMAGE_SIZE}, '
                           'COCO_IMAGE_SIZE)')
  args = parser.parse_args(argv)
  try:
    if settings is None:
      settings = Settings.from_env()
    beam_args = beam_args_lib.beam_pipeline_args(settings.beam, settings.gcp,
                                                 package=settings.run.worker_package)
    workers.build_package_if_shipped(settings)
    try:
      counts = transforms.run(args.captions, args.images, args.output, fmt=args.format,
                              size=args.size or settings.images.size,
                              allowed_licenses=settings.images.licenses,
                              http_timeout=settings.images.http_timeout, beam_args=beam_args)
    finally:
      workers.wait_for_in_process_workers()
  except (ValueError, records.CaptionFormatError, SettingsError, workers.PackageError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  kept = counts['kept_images']
  print(f'{records.summary_line(counts)}; {counts["seconds"]:.1f}s '
        f'({kept / max(counts["seconds"], 1e-9):.1f} images/s)')
  print(f'output: {args.output} (dead letter: {files.dead_letter_path(args.output)})')
  return 0


if __name__ == '__main__':
  try:
    _SETTINGS = Settings.from_env()
  except SettingsError:
    _SETTINGS = None   # main() reads them again and reports the error, after the arguments
  quiet_by_default(_SETTINGS is not None and _SETTINGS.run.verbose)
  sys.exit(main(settings=_SETTINGS))
