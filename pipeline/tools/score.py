"""Score captions with an exported caption model: one line per caption.

    python -m pipeline.tools.score "A man riding a horse." "horse a riding man A"
    echo "A cat on a sofa." | python -m pipeline.tools.score --model DIR

Prints `perplexity<TAB>log_likelihood<TAB>caption`. Without --model, uses the
latest pushed model: the newest version in the local serving directory
(COCO_SERVING_DIR), where Pusher puts each blessed model.
Needs only TensorFlow: the model carries its own preprocessing.
"""

import argparse
import os
import sys
from typing import List, Optional

from pipeline.orchestration import console
from pipeline.settings import Settings


def default_model_dir(settings: Settings) -> str:
  """The latest pushed model: the newest version of the serving directory."""
  from pipeline.artifacts import files  # pylint: disable=g-import-not-at-top
  model_dir = settings.serving.model_dir(settings.run)
  versions = files.serving_versions(model_dir)
  if not versions:
    raise FileNotFoundError(f'no model has been pushed to {model_dir} (a model is pushed once '
                            'the Evaluator blesses it); give one with --model DIR')
  return os.path.join(model_dir, versions[-1])


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('captions', nargs='*', help='captions (default: one per stdin line)')
  parser.add_argument('--model', help='SavedModel directory (default: the latest pushed model)')
  args = parser.parse_args(argv)
  console.quiet_libraries()
  captions = args.captions or [line.rstrip('\n') for line in sys.stdin if line.strip()]
  if not captions:
    parser.error('no captions given')
  try:
    model_dir = args.model or default_model_dir(Settings.from_env())
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  from pipeline.artifacts import files  # pylint: disable=g-import-not-at-top
  for caption, (ppl, ll) in zip(captions, files.score_captions(model_dir, captions)):
    print(f'{ppl:.2f}\t{ll:.3f}\t{caption}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
