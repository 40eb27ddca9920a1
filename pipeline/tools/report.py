"""One self-contained HTML page about a finished local run.

    python -m pipeline.tools.report [--pipeline-root DIR] [--run RUN_ID] [--output FILE]

Writes the report of a run (default: the latest) that `pipeline.report`
builds from the run's ML Metadata. Exit status: 0 when the page is complete,
1 when it had to go without an artifact (each is named on stderr), 2 when
there is no ML Metadata or no such run (or a COCO_* setting is malformed).
"""

import argparse
import sys
from typing import List, Optional

from pipeline.orchestration import console


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--pipeline-root', default=None,
                      help='local pipeline root (default: $COCO_OUTPUT_DIR/coco-captions)')
  parser.add_argument('--run', default=None, help='pipeline run id (default: the latest)')
  parser.add_argument('--output', default=None,
                      help='HTML file to write (default: report.html next to the metadata)')
  args = parser.parse_args(argv)
  console.quiet_libraries()
  # Imported here, after the line above: the report package loads TFX and TensorFlow.
  from pipeline import report  # pylint: disable=g-import-not-at-top
  from pipeline.settings import Settings, SettingsError  # pylint: disable=g-import-not-at-top
  try:
    run_settings = Settings.from_env().run
  except SettingsError as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  pipeline_root = args.pipeline_root or run_settings.pipeline_root
  # The settings' ML Metadata (COCO_METADATA_PATH, or the local file of a
  # gs:// root) unless another root is named: then <root>/metadata.db.
  metadata_file = (run_settings.metadata_file
                   if pipeline_root == run_settings.pipeline_root or run_settings.metadata_path
                   else None)
  try:
    path, missing = report.write_report(pipeline_root, args.output, args.run,
                                        metadata_file=metadata_file)
  except (FileNotFoundError, LookupError) as error:
    print(f'error: {error}', file=sys.stderr)
    return 2
  print(f'report: {path}')
  for line in missing:
    print(f'missing: {line}', file=sys.stderr)
  return 1 if missing else 0


if __name__ == '__main__':
  sys.exit(main())
