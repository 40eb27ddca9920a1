"""Score captions with an exported caption model: one line per caption.

    python -m pipeline.score "A man riding a horse." "horse a riding man A"
    echo "A cat on a sofa." | python -m pipeline.score --model DIR

Prints `perplexity<TAB>log_likelihood<TAB>caption`. Without --model, uses the
newest model the local pipeline published (found through its ML Metadata).
Needs only TensorFlow: the model carries its own preprocessing.
"""

import argparse
import os
import sys
from typing import List, Optional

SIGNATURE = 'score_captions'


def default_model_dir() -> str:
  """The newest local Trainer model's serving directory."""
  from pipeline import config, metadata  # pylint: disable=g-import-not-at-top
  root = config.local_pipeline_root()
  uri = metadata.latest_model_uri(metadata.open_store(config.local_metadata_path(root)))
  if not uri:
    raise FileNotFoundError(f'no trained model recorded under {root}; run the pipeline first')
  return os.path.join(uri, 'Format-Serving')


def score(model_dir: str, captions: List[str]):
  """Returns (perplexity, log_likelihood) per caption."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scorer = tf.saved_model.load(model_dir).signatures[SIGNATURE]
  out = scorer(captions=tf.constant(captions))
  return list(zip(out['perplexity'].numpy().tolist(), out['log_likelihood'].numpy().tolist()))


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
    model_dir = args.model or default_model_dir()
  except FileNotFoundError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for caption, (ppl, ll) in zip(captions, score(model_dir, captions)):
    print(f'{ppl:.2f}\t{ll:.3f}\t{caption}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
