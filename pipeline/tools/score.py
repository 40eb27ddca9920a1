"""Score captions with an exported caption model: one line per caption.

    python -m pipeline.tools.score "A man riding a horse." "horse a riding man A"
    echo "A cat on a sofa." | python -m pipeline.tools.score --model DIR

Prints `perplexity<TAB>log_likelihood<TAB>caption`. Without --model, uses the
newest model the local pipeline published (found through its ML Metadata).
Needs only TensorFlow: the model carries its own preprocessing.
"""

import argparse
import os
import sys
from typing import List, Optional

from pipeline.settings import Settings


def default_model_dir(settings: Settings) -> str:
  """The newest local Trainer model's serving directory."""
  from pipeline.artifacts import files, metadata  # pylint: disable=g-import-not-at-top
  uri = metadata.latest_model_uri(metadata.open_store(settings.run.metadata_file))
  if not uri:
    raise FileNotFoundError(f'no trained model recorded under {settings.run.pipeline_root}; '
                            'run the pipeline first')
  return files.serving_dir(uri)


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('captions', nargs='*', help='captions (default: one per stdin line)')
  parser.add_argument('--model', help='SavedModel directory (default: newest local model)')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
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
