"""The one reader of the environment: every `COCO_*` setting, parsed once into
one typed, immutable `Settings` object.

    settings = Settings.from_env()          # at the edge: a runner or a tool
    settings.trainer.train_steps            # everywhere else: values, never os.environ

Runs are configured by environment variables because the `tfx` CLI runs the
runner files without arguments. Each field below names its variable, its
default and what it does; README.md's settings table lists the same names
and defaults (tests/test_settings.py checks that). Every malformed value is
reported at once, each error naming its variable. Settings the pipeline
hands to an executor (the rejection limit, the vocabulary size, ...) reach
it as component parameters or `custom_config`, so they are part of the
component's cache key and travel to Kubeflow/Vertex in the compiled spec.

Besides the settings, the paths derived from them live here (pipeline root,
ML Metadata, report file, the gs:// layout), so no other module computes one.
"""

import dataclasses
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from modules import constants

PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINE_NAME = 'coco-captions'
ENV_PREFIX = 'COCO_'
MODULE_FILE = os.path.join(PROJECT_DIR, 'modules', 'captions_module.py')
SETUP_FILE = os.path.join(PROJECT_DIR, 'setup.py')
WORKER_PACKAGE = 'coco-captions-tfx.tar.gz'   # setup.py's sdist, as a run stages it
# On Kubeflow/Vertex the code comes from the image, by dotted name.
PREPROCESSING_FN = 'modules.preprocessing.preprocessing_fn'
RUN_FN = 'modules.trainer.run_fn'

BEAM_MODES = ('in_memory', 'multi_processing', 'portable', 'flink', 'dataflow')
EXECUTORS = ('fast', 'stock')
KFP_FORMATS = {'json': 'pipeline.json', 'yaml': 'pipeline.yaml'}
DATAFLOW_SHIPPING = ('image', 'setup_file')
FLINK_ENVIRONMENTS = ('EXTERNAL', 'DOCKER')
# Licenses (the CSV's `license` column) whose images may be used: the same two
# as the Beam/Kubeflow COCO preprocessing example.
ALLOWED_LICENSES = ('Attribution License', 'No known copyright restrictions')
IMAGE_URL_LOCATION = 'url'           # image location meaning "fetch each row's url"
IMAGE_FOLDER_PLACEHOLDER = '{folder}'  # replaced by the folder of the row's COCO URL
DEFAULT_IMAGE = 'gcr.io/{project}/coco-captions-tfx:latest'
REPORT_FILE = 'report.html'
REHEARSAL_DIR = 'rehearsal'
BLESS_MAX_RATIO = 1.0   # a blessed model beats the Kneser-Ney trigram (pipeline/evaluation.py)
SERVING_MODEL_NAME = PIPELINE_NAME   # the model's name in the serving layout and on Vertex AI
# Google's prebuilt TensorFlow 2.16 CPU prediction container (Vertex AI).
VERTEX_SERVING_IMAGE = 'us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-16:latest'


class SettingsError(ValueError):
  """One or more settings are malformed or missing; the message names each variable."""


# ------------------------------------------------------------------ parsers
# Each takes the raw text of a set, non-empty variable and returns its value,
# or raises ValueError with what was expected; `from_env` adds the name.
def parse_text(raw: str) -> str:
  return raw


def parse_path(raw: str) -> str:
  """A local path, made absolute: paths end up in artifact URIs and cache
  keys, so a relative one would make the same run from another directory
  (or the same directory named differently) miss the cache. URLs (gs://) as given."""
  return raw if '://' in raw else os.path.abspath(raw)


def parse_bool(raw: str) -> bool:
  value = raw.strip().lower()
  if value in ('1', 'true', 'yes', 'on'):
    return True
  if value in ('0', 'false', 'no', 'off'):
    return False
  raise ValueError('use 1 or 0')


def parse_int(raw: str) -> int:
  try:
    return int(raw)
  except ValueError:
    raise ValueError('is not an integer') from None


def parse_float(raw: str) -> float:
  try:
    return float(raw)
  except ValueError:
    raise ValueError('is not a number') from None


def parse_fraction(raw: str) -> float:
  value = parse_float(raw)
  if not 0.0 <= value <= 1.0:
    raise ValueError('is a fraction: between 0 and 1')
  return value


def parse_positive(raw: str) -> int:
  value = parse_int(raw)
  if value < 1:
    raise ValueError('must be at least 1')
  return value


def parse_names(raw: str) -> Tuple[str, ...]:
  """Comma-separated names, e.g. license names."""
  return tuple(name.strip() for name in raw.split(',') if name.strip())


def choice(*options: str) -> Callable[[str], str]:
  def parse(raw: str) -> str:
    if raw not in options:
      raise ValueError(f'choose one of {", ".join(options)}')
    return raw
  return parse


def setting(name: str, default: Any, parse: Callable[[str], Any], doc: str,
            shown: Optional[str] = None) -> Any:
  """A dataclass field read from `COCO_<name>`; `shown` is the default as the
  README writes it, when it is not the value itself (a path, a CPU count)."""
  return dataclasses.field(default=default, metadata={
      'env': ENV_PREFIX + name, 'parse': parse, 'doc': doc,
      'shown': shown if shown is not None else _show(default)})


def _show(value: Any) -> str:
  if value is None:
    return 'none'
  if isinstance(value, bool):
    return '1' if value else '0'
  if isinstance(value, tuple):
    return ','.join(value)
  return str(value)


# ------------------------------------------------------------------ the settings
@dataclasses.dataclass(frozen=True)
class RunSettings:
  """Where a local run reads and writes, and how it runs."""
  data_root: str = setting('DATA_ROOT', os.path.join(PROJECT_DIR, 'data', 'captions'), parse_path,
                           'directory of input CSVs (every file in it is read)', 'data/captions')
  output_dir: str = setting('OUTPUT_DIR', os.path.join(PROJECT_DIR, 'tfx_pipeline_output'),
                            parse_path, 'local pipeline outputs and ML Metadata',
                            'tfx_pipeline_output')
  metadata_path: Optional[str] = setting(
      'METADATA_PATH', None, parse_path, 'SQLite ML Metadata file',
      '<pipeline root>/metadata.db')
  cache: bool = setting('CACHE', True, parse_bool, '0 disables the component cache')
  run_to: Optional[str] = setting('RUN_TO', None, parse_text,
                                  'stop after this component (a TFX partial run), e.g. `Transform`',
                                  'the last component')
  verbose: bool = setting('VERBOSE', False, parse_bool, '1 shows all TF/Beam/absl logs')
  cache_dir: str = setting('CACHE_DIR', os.path.join(os.path.expanduser('~'), '.cache',
                                                     'coco-captions-tfx'), parse_path,
                           'what outlives a clone and is shared by clones: the image-like '
                           'virtualenv of the rehearsal, kept per key of what made it',
                           '~/.cache/coco-captions-tfx')
  image_venv: Optional[str] = setting(
      'IMAGE_VENV', None, parse_path,
      'virtualenv made like the component image, in which the rehearsal (`make rehearse`) '
      'runs the compiled spec\'s tasks; remade whenever the lock, `tools/image-install.sh`, the '
      'Dockerfile or the Python change, its project wheel whenever `pipeline/` or `modules/` do',
      '<cache dir>/venv-image-<key of the lock, install script, Dockerfile, Python>')
  report: bool = setting('REPORT', False, parse_bool,
                         '1 writes the run\'s HTML report (`report.html` next to the metadata) '
                         'after the run')

  @property
  def pipeline_root(self) -> str:
    return os.path.join(self.output_dir, PIPELINE_NAME)

  @property
  def rehearsal_dir(self) -> str:
    """Where `make rehearse` compiles the Kubeflow/Vertex spec and runs it:
    its pipeline root, serving directory, record and logs."""
    return os.path.join(self.output_dir, REHEARSAL_DIR)

  @property
  def metadata_file(self) -> str:
    """SQLite ML Metadata lives under the pipeline root it describes; a gs://
    root keeps it on local disk instead (SQLite cannot live on GCS)."""
    if self.metadata_path:
      return self.metadata_path
    if self.pipeline_root.startswith('gs://'):
      return os.path.join(PROJECT_DIR, 'tfx_pipeline_output', 'metadata', f'{PIPELINE_NAME}.db')
    return os.path.join(self.pipeline_root, 'metadata.db')

  @property
  def report_file(self) -> str:
    """The run report's default file: next to the ML Metadata it is read from."""
    return os.path.join(os.path.dirname(self.metadata_file), REPORT_FILE)

  @property
  def log_dir(self) -> str:
    return os.path.join(os.path.dirname(self.metadata_file), 'logs')

  @property
  def worker_package(self) -> str:
    """The sdist of this checkout that a run stages for its Beam workers
    (pipeline/orchestration/workers.py builds it); on local disk, like the log."""
    return os.path.join(os.path.dirname(self.metadata_file), 'worker-package', WORKER_PACKAGE)


@dataclasses.dataclass(frozen=True)
class BeamSettings:
  """Which Beam runner the Beam components use (pipeline/beam_args.py)."""
  mode: str = setting('BEAM_MODE', 'in_memory', choice(*BEAM_MODES),
                      '`in_memory`, `multi_processing`, `portable`, `flink`, `dataflow`')
  workers: int = setting('BEAM_WORKERS', os.cpu_count() or 2, parse_positive,
                         'workers for `multi_processing`', 'CPU count')
  job_endpoint: Optional[str] = setting('BEAM_JOB_ENDPOINT', None, parse_text,
                                        '`host:port` of a Beam job service for `portable`')
  environment: str = setting('BEAM_ENVIRONMENT', 'LOOPBACK', parse_text,
                             'SDK worker environment for `portable`')
  flink_master: str = setting('FLINK_MASTER', 'localhost:8081', parse_text,
                              '`host:port` of the Flink cluster\'s REST endpoint for `flink`: '
                              'checked before a run, asked for the job ids after it; '
                              '`tools/flink.sh up` serves it and points its job server there')
  flink_job_endpoint: str = setting('FLINK_JOB_ENDPOINT', 'localhost:8099', parse_text,
                                    '`host:port` of Beam\'s Flink job server for `flink` '
                                    '(`tools/flink.sh up` starts one for the cluster)')
  flink_environment: str = setting('FLINK_ENVIRONMENT', 'EXTERNAL', choice(*FLINK_ENVIRONMENTS),
                                   'where the SDK workers of `flink` run: `EXTERNAL` (a worker '
                                   'pool beside the TaskManagers, `COCO_FLINK_WORKERS`) or '
                                   '`DOCKER` (the component image, `COCO_IMAGE`: a real cluster)')
  flink_workers: str = setting('FLINK_WORKERS', 'localhost:50000', parse_text,
                               '`host:port` of the SDK worker pool beside the TaskManagers '
                               '(`EXTERNAL`) for `flink`')
  flink_parallelism: int = setting('FLINK_PARALLELISM', 2, parse_positive,
                                   'parallelism of each Flink job for `flink`')

  @property
  def flink_rest(self) -> str:
    """The Flink master's REST URL (its web UI too)."""
    master = self.flink_master
    return master if '://' in master else f'http://{master}'


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """Reading and checking the input, and Transform."""
  example_gen: str = setting('EXAMPLEGEN', 'fast', choice(*EXECUTORS),
                             "CsvExampleGen's executor: `fast` (pyarrow, with the input checks) "
                             "or `stock` (TFX's)")
  transform: str = setting('TRANSFORM', 'fast', choice(*EXECUTORS),
                           "Transform's executor: `fast` (batched TFRecord I/O) or `stock` (TFX's)")
  max_rejected: float = setting('MAX_REJECTED', 0.05, parse_fraction,
                                'share of input rows ExampleGen may reject before the run stops')
  vocab_size: int = setting('VOCAB_SIZE', constants.VOCAB_SIZE, parse_positive,
                            'caption tokens with their own id (the rest share one OOV id)')
  max_tokens: int = setting('MAX_TOKENS', constants.MAX_TOKENS, parse_positive,
                            'tokens kept per caption (pad/truncate)')

  def transform_config(self) -> Dict[str, Any]:
    """`custom_config` of preprocessing_fn (part of Transform's cache key)."""
    return {'vocab_size': self.vocab_size, 'max_tokens': self.max_tokens}


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
  train_steps: int = setting('TRAIN_STEPS', constants.TRAIN_STEPS, parse_positive,
                             'training steps')
  eval_steps: Optional[int] = setting('EVAL_STEPS', constants.EVAL_STEPS, parse_positive,
                                      'eval batches for the final perplexity', 'the whole split')
  batch_size: int = setting('BATCH_SIZE', constants.TRAINER_DEFAULTS['batch_size'],
                            parse_positive, 'training batch size')
  steps_per_epoch: int = setting('STEPS_PER_EPOCH', constants.TRAINER_DEFAULTS['steps_per_epoch'],
                                 parse_positive, 'steps between two evaluations (an "epoch")')

  def trainer_config(self) -> Dict[str, Any]:
    """`custom_config` of run_fn (part of Trainer's cache key)."""
    return dict(constants.TRAINER_DEFAULTS, batch_size=self.batch_size,
                steps_per_epoch=self.steps_per_epoch)


@dataclasses.dataclass(frozen=True)
class ServingSettings:
  """Evaluator's blessing and where Pusher puts a blessed model."""
  bless_margin: float = setting(
      'BLESS_MARGIN', 0.01, parse_fraction,
      "how much higher (relative) a candidate's eval perplexity may be than the latest blessed "
      "model's and still be blessed")
  max_ratio: float = setting(
      'BLESS_MAX_RATIO', BLESS_MAX_RATIO, parse_float,
      "a candidate's eval perplexity may be at most this many times the Kneser-Ney trigram's "
      "(1: it must beat the trigram)")
  serving_dir: Optional[str] = setting(
      'SERVING_DIR', None, parse_path,
      "local serving root: blessed models go to `<root>/coco-captions/<version>/` "
      "(TensorFlow Serving's layout)", '$COCO_OUTPUT_DIR/serving')

  def serving_root(self, run: 'RunSettings') -> str:
    return self.serving_dir or os.path.join(run.output_dir, 'serving')

  def model_dir(self, run: 'RunSettings') -> str:
    """Pusher's base directory: one numbered version directory per push."""
    return os.path.join(self.serving_root(run), SERVING_MODEL_NAME)


@dataclasses.dataclass(frozen=True)
class ImageSettings:
  """ImageExampleGen (off by default)."""
  enabled: bool = setting('IMAGES', False, parse_bool,
                          '1 adds `ImageExampleGen` (images with the captions)')
  location: Optional[str] = setting(
      'IMAGE_DIR', None, parse_text,
      'where images are: directory or `gs://` prefix (`{folder}` = `train2017`, `val2017`, ... '
      "from the row's URL), or `url`")
  size: int = setting('IMAGE_SIZE', constants.IMAGE_SIZE, parse_positive,
                      'images are resized to this square size')
  licenses: Tuple[str, ...] = setting('IMAGE_LICENSES', ALLOWED_LICENSES, parse_names,
                                      'license names whose images are used')
  http_timeout: float = setting('IMAGE_HTTP_TIMEOUT', 10.0, parse_float,
                                'seconds per image with `COCO_IMAGE_DIR=url`', '10')


@dataclasses.dataclass(frozen=True)
class GcpSettings:
  """Dataflow and Kubeflow Pipelines / Vertex AI (docs/gcp.md)."""
  project: Optional[str] = setting('GCP_PROJECT', None, parse_text, 'project id',
                                   'none (required)')
  region: str = setting('GCP_REGION', 'us-central1', parse_text,
                        'Dataflow region and Vertex location')
  gcs_root: Optional[str] = setting('GCS_ROOT', None, parse_text,
                                    '`gs://bucket/prefix`; everything below lives under it',
                                    'none (required)')
  image: Optional[str] = setting('IMAGE', None, parse_text,
                                 'component image, also the Dataflow worker image',
                                 DEFAULT_IMAGE.format(project='<project>'))
  kfp_format: str = setting('KFP_FORMAT', 'json', choice(*KFP_FORMATS),
                            '`json` (Vertex PipelineJob) or `yaml` (KFP PipelineSpec), for '
                            '`kubeflow_runner.py`')
  kfp_output_dir: Optional[str] = setting('KFP_OUTPUT_DIR', None, parse_text,
                                          'where `kubeflow_runner.py` writes the file',
                                          'current directory')
  kfp_beam_mode: str = setting('KFP_BEAM_MODE', 'dataflow', choice(*BEAM_MODES),
                               "Beam mode inside the components (`in_memory` runs Beam in the "
                               "component's pod)")
  kfp_pipeline_root: Optional[str] = setting('KFP_PIPELINE_ROOT', None, parse_text,
                                             'pipeline outputs', '$COCO_GCS_ROOT/pipeline_root')
  kfp_data_root: Optional[str] = setting('KFP_DATA_ROOT', None, parse_text,
                                         'input CSV directory (every file in it is read)',
                                         '$COCO_GCS_ROOT/data')
  kfp_serving_dir: Optional[str] = setting(
      'KFP_SERVING_DIR', None, parse_text,
      'serving root for KFP/Vertex runs: blessed models go to `<root>/coco-captions/<version>/` '
      '(TensorFlow Serving\'s layout) instead of Vertex AI', 'none (push to Vertex AI)')
  kfp_image_dir: Optional[str] = setting(
      'KFP_IMAGE_DIR', None, parse_text,
      'images for KFP/Vertex runs; `{folder}` is `train2017`, `val2017`, ... from each row\'s '
      'URL; `url` fetches the URLs instead', '$COCO_GCS_ROOT/images/{folder}')
  dataflow_machine_type: str = setting('DATAFLOW_MACHINE_TYPE', 'n1-standard-4', parse_text,
                                       'worker machine type')
  dataflow_max_workers: int = setting('DATAFLOW_MAX_WORKERS', 10, parse_positive,
                                      'autoscaling limit')
  dataflow_disk_gb: int = setting('DATAFLOW_DISK_GB', 50, parse_positive, 'worker disk')
  dataflow_ship: str = setting('DATAFLOW_SHIP', 'image', choice(*DATAFLOW_SHIPPING),
                               '`image` (`--sdk_container_image=$COCO_IMAGE`) or `setup_file` '
                               '(launched from a checkout only: compiling for Kubeflow/Vertex '
                               'refuses it)')
  vertex_endpoint: str = setting('VERTEX_ENDPOINT', SERVING_MODEL_NAME, parse_text,
                                 'Vertex AI endpoint the Pusher deploys a blessed model to '
                                 '(created if absent; the model is also in the Model Registry)')
  vertex_serving_image: str = setting('VERTEX_SERVING_IMAGE', VERTEX_SERVING_IMAGE, parse_text,
                                      "Vertex AI prediction container for the model")
  vertex_machine_type: str = setting('VERTEX_MACHINE_TYPE', 'n1-standard-2', parse_text,
                                     'machine type of the endpoint\'s replicas')
  dataflow_requirements: Optional[str] = setting(
      'DATAFLOW_REQUIREMENTS', None, parse_text,
      'with `setup_file`: `--requirements_file` for the workers')

  @property
  def container_image(self) -> str:
    return self.image or DEFAULT_IMAGE.format(project=self.project or 'PROJECT')

  def require(self, *fields: str, purpose: str) -> None:
    """Placeholders are never invented: a missing project or bucket is an
    error at the point of use, naming every variable to set."""
    missing = [variable(type(self), f) for f in fields if not getattr(self, f)]
    if missing:
      raise SettingsError(f'{purpose} needs {", ".join(missing)} to be set')

  def gcs(self) -> str:
    self.require('gcs_root', purpose='Kubeflow/Vertex and Dataflow')
    if not self.gcs_root.startswith('gs://'):
      raise SettingsError(f'{variable(GcpSettings, "gcs_root")} must be a gs:// path, '
                          f'got {self.gcs_root!r}')
    return self.gcs_root.rstrip('/')

  def pipeline_root(self) -> str:
    return self.kfp_pipeline_root or f'{self.gcs()}/pipeline_root'

  def data_root(self) -> str:
    return self.kfp_data_root or f'{self.gcs()}/data'

  def image_location(self) -> str:
    """COCO's own layout (train2017/, val2017/) under `<COCO_GCS_ROOT>/images`."""
    return self.kfp_image_dir or f'{self.gcs()}/images/{IMAGE_FOLDER_PLACEHOLDER}'


@dataclasses.dataclass(frozen=True)
class Settings:
  run: RunSettings = RunSettings()
  beam: BeamSettings = BeamSettings()
  data: DataSettings = DataSettings()
  trainer: TrainerSettings = TrainerSettings()
  serving: ServingSettings = ServingSettings()
  images: ImageSettings = ImageSettings()
  gcp: GcpSettings = GcpSettings()

  @classmethod
  def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> 'Settings':
    """Reads every COCO_* variable (unset or empty: the default)."""
    environ = os.environ if environ is None else environ
    errors: List[str] = []
    groups = {}
    for group in dataclasses.fields(cls):
      values = {}
      for field in dataclasses.fields(group.type):
        raw = environ.get(field.metadata['env'], '')
        if raw == '':
          continue
        try:
          values[field.name] = field.metadata['parse'](raw)
        except ValueError as error:
          errors.append(f'{field.metadata["env"]}={raw!r} {error}')
      groups[group.name] = group.type(**values)
    if errors:
      raise SettingsError('; '.join(errors))
    return cls(**groups)


def under_tfx_cli(environ: Optional[Mapping[str, str]] = None) -> bool:
  """True when the `tfx` CLI runs a runner file (it sets its engine's home
  directory), which prints its own lines."""
  environ = os.environ if environ is None else environ
  return bool(environ.get('VERTEX_HOME') or environ.get('KUBEFLOW_HOME'))


def variable(group: type, field_name: str) -> str:
  """The environment variable of a field, e.g. variable(ImageSettings, 'location')."""
  return next(f.metadata['env'] for f in dataclasses.fields(group) if f.name == field_name)


def documented() -> List[Tuple[str, str, str]]:
  """(variable, default as shown, what it does) for every setting, in order."""
  return [(f.metadata['env'], f.metadata['shown'], f.metadata['doc'])
          for group in dataclasses.fields(Settings) for f in dataclasses.fields(group.type)]
