"""Run the pipeline on this machine: LocalDagRunner + SQLite ML Metadata.

    python local_runner.py            # or: make run
    python local_runner.py --report   # also write the run's HTML report

Takes no other arguments: the `tfx` CLI runs this file without any, so runs
are configured by COCO_* environment variables (README.md "Settings"; read
once, in pipeline/settings.py). Orchestration (the run lock, Ctrl-C,
partial runs with COCO_RUN_TO, the summary, the report) lives in
pipeline/orchestration/local.py.
"""

import sys

from pipeline.orchestration import local
from pipeline.settings import Settings


def build(settings: Settings):
  """The local pipeline; `tfx pipeline create` reads it through local.main."""
  from pipeline.pipeline import local_pipeline  # pylint: disable=g-import-not-at-top
  return local_pipeline(settings)


if __name__ == '__main__':
  sys.exit(local.main(build))
