"""Every name, path, size and step count of the pipeline, in one place.

Runners, the module file, tools and tests import these; nothing else repeats
them. Values a user changes per run come from environment variables (the `tfx`
CLI hides argv, so runners cannot rely on flags): see `env()` and README.md.
Model and preprocessing settings reach the Transform and Trainer executors as
`custom_config` (see `transform_config()` / `trainer_config()`), so changing
one here changes the component's fingerprint and invalidates its cache.
"""

import os
from typing import Any, Dict, Optional, Tuple

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------- naming
PIPELINE_NAME = 'coco-captions'
ENV_PREFIX = 'COCO_'

# ---------------------------------------------------------------- raw data
# Columns of the CSV made by `tools/ingest_coco.py`, in order.
CSV_COLUMNS = ('image_id', 'id', 'caption', 'url', 'file_name', 'license')
IMAGE_ID_KEY = 'image_id'
CAPTION_ID_KEY = 'id'
CAPTION_KEY = 'caption'
REQUIRED_COLUMNS = (IMAGE_ID_KEY, CAPTION_ID_KEY, CAPTION_KEY)
INTEGER_COLUMNS = (IMAGE_ID_KEY, CAPTION_ID_KEY)

# Input checks (pipeline/validate.py): rows over these limits are rejected,
# and the run fails when more than MAX_REJECTED_FRACTION of rows are.
MAX_CAPTION_CHARS = 1000       # the model reads MAX_TOKENS tokens; this is a broken row
MAX_RECORD_LINES = 4           # a quoted field spanning more lines is an unbalanced quote
MAX_REJECTED_FRACTION = 0.05

# Split by image so the captions of one image never straddle train and eval.
SPLIT_FEATURE = IMAGE_ID_KEY
SPLIT_BUCKETS = {'train': 2, 'eval': 1}

# The DAG's components (node ids), in the order they run locally.
COMPONENTS = ('CsvExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator',
              'Transform', 'Trainer')

# CsvExampleGen's executor: 'fast' (pipeline/fast_csv.py) or 'stock'.
EXAMPLEGEN_EXECUTOR = 'fast'   # proven equal to stock on 400k rows: bench/compare_examplegen.py

# ---------------------------------------------------------------- images (off by default)
# With images on (`create_pipeline(images=True)`, `COCO_IMAGES=1`), ImageExampleGen runs
# after CsvExampleGen: keeps rows whose image license is allowed, reads and resizes each
# image once, cleans the captions, and its Examples feed the rest of the DAG.
IMAGE_COMPONENT = 'ImageExampleGen'
# Licenses (CSV `license` column: the annotation's license name) whose images may be used;
# the same two as the Beam/Kubeflow COCO preprocessing example.
ALLOWED_LICENSES = ('Attribution License', 'No known copyright restrictions')
LICENSE_KEY = 'license'
URL_KEY = 'url'
FILE_NAME_KEY = 'file_name'
# Images are resized to IMAGE_SIZE x IMAGE_SIZE (aspect ratio not kept: a caption may
# describe anything in the frame, so nothing is cropped away) and stored as JPEG.
IMAGE_SIZE = 128
IMAGE_JPEG_QUALITY = 90
IMAGE_HTTP_TIMEOUT_SECONDS = 10.0
# `{folder}` in an image location is replaced by the folder of the row's COCO URL
# (train2017, val2017, ...), so one location covers COCO's own layout.
IMAGE_FOLDER_PLACEHOLDER = '{folder}'
IMAGE_URL_LOCATION = 'url'          # image location meaning "fetch each row's url"
# Features ImageExampleGen writes (with the caption, image_id and id of the CSV).
IMAGE_KEY = 'image'                 # JPEG bytes, IMAGE_SIZE x IMAGE_SIZE x 3
IMAGE_HEIGHT_KEY = 'image_height'
IMAGE_WIDTH_KEY = 'image_width'
# Why an image was not used; each is a Beam counter and a dead-letter reason.
FAILURE_REASONS = ('missing', 'corrupt', 'read_error', 'http_error', 'timeout')
IMAGE_COUNTER_NAMESPACE = 'coco_images'
DEAD_LETTER_NAME = 'dead_letter'    # file prefix of the dead-letter CSV (id, reason, ...)
IMAGE_SUMMARY_NAME = 'summary.json'  # counts, next to the dead letter

# ---------------------------------------------------------------- transform
# Transform's executor: 'fast' (pipeline/fast_transform.py: batched TFRecord
# I/O around the stock analysis) or 'stock'.
TRANSFORM_EXECUTOR = 'fast'
TRANSFORM_BATCH_SIZE = 1000  # records per decoded batch (tfx_bsl's own cap)
VOCAB_SIZE = 5000            # top-k caption tokens kept; the rest share one OOV id
NUM_OOV_BUCKETS = 1
MAX_TOKENS = 16              # caption tokens kept per caption (pad/truncate)
VOCAB_NAME = 'caption_vocab'  # file name of the vocabulary in transform_output
# Model-side token ids: ids 0 and 1 are reserved, vocabulary ids start at 2.
PAD_ID = 0
BOUNDARY_ID = 1              # start-of-caption input and end-of-caption target
FIRST_WORD_ID = 2
NUM_CLASSES = FIRST_WORD_ID + VOCAB_SIZE + NUM_OOV_BUCKETS

# Transformed feature names (outputs of preprocessing_fn).
TOKEN_IDS_KEY = 'token_ids'
NUM_TOKENS_KEY = 'num_tokens'
LENGTH_RATIO_KEY = 'length_ratio'   # caption length / mean length (full pass)
TRANSFORMED_IMAGE_ID_KEY = 'image_id'
TRANSFORMED_CAPTION_ID_KEY = 'caption_id'
TRANSFORMED_IMAGE_KEY = 'image'     # float32 [IMAGE_SIZE, IMAGE_SIZE, 3] in [0, 1] (images on)

# ---------------------------------------------------------------- trainer
TRAIN_STEPS = 1000
EVAL_STEPS = None            # None: score the whole eval split (exact perplexity)
BATCH_SIZE = 128
EMBED_DIM = 256
GRU_UNITS = 256
DROPOUT = 0.4                # on embeddings and GRU outputs
LEARNING_RATE = 5e-3         # peak of a warm-up + cosine schedule
WARMUP_STEPS = 100
STEPS_PER_EPOCH = 200        # "epoch" = logging/eval interval, in steps
EPOCH_EVAL_CAPTIONS = 4096   # eval captions scored after each epoch (final: all)
PATIENCE = 2                 # epochs without a better eval loss before stopping
SEED = 42

# ---------------------------------------------------------------- report
REPORT_FILE = 'report.html'  # `python -m pipeline.report`, next to the run's ML Metadata
REPORT_TOP_TOKENS = 20       # most frequent vocabulary tokens listed
REPORT_CAPTIONS = 8          # eval captions scored by the exported model
REPORT_MAX_LENGTH = 32       # caption-length histogram: longer captions share the last bar

# ---------------------------------------------------------------- GCP / KFP
DEFAULT_GCP_REGION = 'us-central1'
DEFAULT_IMAGE = 'gcr.io/{project}/coco-captions-tfx:latest'


def env(name: str, default: Optional[str] = None) -> Optional[str]:
  """Reads `COCO_<name>`; one prefix so `env | grep COCO_` shows every override."""
  return os.environ.get(ENV_PREFIX + name, default)


def env_int(name: str, default: Optional[int]) -> Optional[int]:
  """Integer `COCO_<name>`, with an error naming the variable if malformed."""
  raw = env(name)
  if raw is None or raw == '':
    return default
  try:
    return int(raw)
  except ValueError:
    raise ValueError(f'{ENV_PREFIX}{name}={raw!r} is not an integer') from None


def data_root() -> str:
  """Directory of input CSVs (every file in it is read)."""
  return env('DATA_ROOT', os.path.join(PROJECT_DIR, 'data', 'captions'))


def local_output_dir() -> str:
  """Where local runs keep pipeline outputs and their ML Metadata."""
  return env('OUTPUT_DIR', os.path.join(PROJECT_DIR, 'tfx_pipeline_output'))


def local_pipeline_root(output_dir: Optional[str] = None) -> str:
  return os.path.join(output_dir or local_output_dir(), PIPELINE_NAME)


def local_metadata_path(pipeline_root: str) -> str:
  """SQLite ML Metadata lives under the pipeline root it describes.

  A gs:// root (local orchestration, Beam on Dataflow) keeps it on local disk
  instead, since SQLite cannot live on GCS. `COCO_METADATA_PATH` overrides.
  """
  if env('METADATA_PATH'):
    return env('METADATA_PATH')
  if pipeline_root.startswith('gs://'):
    return os.path.join(PROJECT_DIR, 'tfx_pipeline_output', 'metadata', f'{PIPELINE_NAME}.db')
  return os.path.join(pipeline_root, 'metadata.db')


def local_report_path(pipeline_root: str) -> str:
  """The run report's default file: next to the ML Metadata it is read from."""
  return os.path.join(os.path.dirname(local_metadata_path(pipeline_root)), REPORT_FILE)


def report_requested() -> bool:
  """`COCO_REPORT=1`: the local runner writes the HTML report after a run."""
  return env('REPORT', '0').strip().lower() not in ('', '0', 'false', 'no')


def kfp_pipeline_root(gcs_root: str) -> str:
  """Pipeline root on GCS for KFP/Vertex runs (`COCO_KFP_PIPELINE_ROOT` overrides)."""
  return env('KFP_PIPELINE_ROOT') or f'{_gcs(gcs_root)}/pipeline_root'


def kfp_data_root(gcs_root: str) -> str:
  """Input CSV directory for KFP/Vertex runs (`COCO_KFP_DATA_ROOT` overrides)."""
  return env('KFP_DATA_ROOT') or f'{_gcs(gcs_root)}/data'


def _gcs(gcs_root: str) -> str:
  if not gcs_root.startswith('gs://'):
    raise ValueError(f'{ENV_PREFIX}GCS_ROOT must be a gs:// path, got {gcs_root!r}')
  return gcs_root.rstrip('/')


def example_gen_executor() -> str:
  """'fast' (pyarrow, pipeline/fast_csv.py) or 'stock' (TFX's own executor)."""
  return env('EXAMPLEGEN', EXAMPLEGEN_EXECUTOR)


def _flag(name: str, default: bool = False) -> bool:
  """Boolean `COCO_<name>`: 1/true/yes/on or 0/false/no/off (any case)."""
  raw = (env(name) or '').strip().lower()
  if not raw:
    return default
  if raw in ('1', 'true', 'yes', 'on'):
    return True
  if raw in ('0', 'false', 'no', 'off'):
    return False
  raise ValueError(f'{ENV_PREFIX}{name}={raw!r}; use 1 or 0')


def images_enabled() -> bool:
  """`COCO_IMAGES=1` adds ImageExampleGen (images with the captions) to the DAG."""
  return _flag('IMAGES')


def image_location() -> Optional[str]:
  """Where ImageExampleGen reads images (`COCO_IMAGE_DIR`): a directory, a gs://
  prefix (either may contain `{folder}`), or `url` for each row's URL."""
  return env('IMAGE_DIR') or None


def image_size() -> int:
  return env_int('IMAGE_SIZE', IMAGE_SIZE)


def allowed_licenses() -> Tuple[str, ...]:
  """License names whose images are kept (`COCO_IMAGE_LICENSES`, comma-separated)."""
  raw = env('IMAGE_LICENSES')
  if not raw:
    return ALLOWED_LICENSES
  return tuple(name.strip() for name in raw.split(',') if name.strip())


def image_http_timeout() -> float:
  raw = env('IMAGE_HTTP_TIMEOUT')
  try:
    return float(raw) if raw else IMAGE_HTTP_TIMEOUT_SECONDS
  except ValueError:
    raise ValueError(f'{ENV_PREFIX}IMAGE_HTTP_TIMEOUT={raw!r} is not a number') from None


def components(images: Optional[bool] = None) -> Tuple[str, ...]:
  """The DAG's node ids in run order; with images, ImageExampleGen follows CsvExampleGen."""
  images = images_enabled() if images is None else images
  if not images:
    return COMPONENTS
  first = COMPONENTS.index('CsvExampleGen') + 1
  return COMPONENTS[:first] + (IMAGE_COMPONENT,) + COMPONENTS[first:]


def kfp_image_location(gcs_root: str) -> str:
  """Images for KFP/Vertex runs (`COCO_KFP_IMAGE_DIR` overrides): COCO's own layout
  (train2017/, val2017/) under `<COCO_GCS_ROOT>/images`."""
  return env('KFP_IMAGE_DIR') or f'{_gcs(gcs_root)}/images/{IMAGE_FOLDER_PLACEHOLDER}'


def transform_executor() -> str:
  """'fast' (batched I/O, pipeline/fast_transform.py) or 'stock' (TFX's own)."""
  return env('TRANSFORM', TRANSFORM_EXECUTOR)


def max_rejected_fraction() -> float:
  """COCO_MAX_REJECTED: the share of rows ExampleGen may reject (0..1)."""
  raw = env('MAX_REJECTED')
  try:
    return MAX_REJECTED_FRACTION if raw in (None, '') else float(raw)
  except ValueError:
    raise ValueError(f'{ENV_PREFIX}MAX_REJECTED={raw!r} is not a number') from None


def train_steps() -> int:
  return env_int('TRAIN_STEPS', TRAIN_STEPS)


def eval_steps() -> Optional[int]:
  return env_int('EVAL_STEPS', EVAL_STEPS)


def transform_config() -> Dict[str, Any]:
  """`custom_config` handed to preprocessing_fn (part of Transform's cache key)."""
  return {
      'vocab_size': env_int('VOCAB_SIZE', VOCAB_SIZE),
      'max_tokens': env_int('MAX_TOKENS', MAX_TOKENS),
  }


def trainer_config() -> Dict[str, Any]:
  """`custom_config` handed to run_fn (part of Trainer's cache key)."""
  return {
      'batch_size': env_int('BATCH_SIZE', BATCH_SIZE),
      'embed_dim': EMBED_DIM,
      'gru_units': GRU_UNITS,
      'dropout': DROPOUT,
      'learning_rate': LEARNING_RATE,
      'warmup_steps': WARMUP_STEPS,
      'steps_per_epoch': env_int('STEPS_PER_EPOCH', STEPS_PER_EPOCH),
      'epoch_eval_captions': EPOCH_EVAL_CAPTIONS,
      'patience': PATIENCE,
      'seed': SEED,
  }
