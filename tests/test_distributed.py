"""Distributed rehearsal on one machine: the same pipeline with its Beam stages on
DirectRunner multi_processing (2 worker processes) and on PortableRunner against a
Beam job service started here, compared with the in-memory run.

Input: the shipped sample re-dealt into 3 CSV shards; vocabulary top-k (300) smaller
than the number of distinct tokens, so the top-k cut itself must agree.

What is compared ends at Transform. The multi_processing run goes on to the end
(its Evaluator is TFMA in worker processes, which no other test runs); the
in-memory reference and the portable run stop after Transform (`COCO_RUN_TO`):
the shared e2e run trains and evaluates in memory, and tests/test_flink.py
evaluates through PortableRunner.
"""

import csv
import glob
import os
import socket
import subprocess
import sys
import time

import grpc
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from apache_beam.portability.api import beam_job_api_pb2, beam_job_api_pb2_grpc

from bench.run import TreeSampler
from modules.preprocessing import tokenize
from pipeline.tools import ingest
from pipeline.artifacts import metadata
from tests.conftest import csv_rows, run_local
from modules import constants, features
from tests.conftest import settings_of, DATA_ROOT

pytestmark = pytest.mark.slow
VOCAB_SIZE = 300
SHARDS = 3


def reshard(src_dir: str, dst_dir: str, shards: int) -> int:
  """Deals the rows of every CSV in src_dir round-robin into `shards` files."""
  rows = [[int(r['image_id']), int(r['id'])] + [r[c] for c in features.RAW_COLUMNS[2:]]
          for r in csv_rows(src_dir)]
  os.makedirs(dst_dir)
  outs = [open(p, 'w', newline='', encoding='utf-8')
          for p in ingest.shard_paths(os.path.join(dst_dir, 'captions.csv'), shards)]
  try:
    return ingest.write_csv(rows, outs)
  finally:
    for out in outs:
      out.close()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Outputs:
  """What a finished run produced, read through its ML Metadata."""

  def __init__(self, output_dir: str):
    self.store = metadata.open_store(settings_of({'COCO_OUTPUT_DIR': output_dir}).run.metadata_file)

  def uri(self, type_name: str, producer: str) -> str:
    uris = [a.uri for a in self.store.get_artifacts_by_type(type_name) if f'/{producer}/' in a.uri]
    assert len(uris) == 1, (type_name, producer, uris)
    return uris[0]

  def vocabulary(self) -> bytes:
    path = os.path.join(self.uri('TransformGraph', 'Transform'), 'transform_fn', 'assets',
                        constants.VOCAB_NAME)
    with open(path, 'rb') as f:
      return f.read()

  def example_counts(self, type_name: str, producer: str) -> dict:
    uri = self.uri(type_name, producer)
    return {split: sum(1 for _ in tf.data.TFRecordDataset(
        glob.glob(os.path.join(uri, f'Split-{split}', '*')), compression_type='GZIP'))
            for split in ('train', 'eval')}

  def statistics_counts(self) -> dict:
    uri = self.uri('ExampleStatistics', 'StatisticsGen')
    counts = {}
    for split in ('train', 'eval'):
      stats = tfdv.load_stats_binary(os.path.join(uri, f'Split-{split}', 'FeatureStats.pb'))
      counts[split] = stats.datasets[0].num_examples
    return counts

  def states(self) -> set:
    return {r.state for r in metadata.component_runs(self.store)}


@pytest.fixture(scope='module')
def sharded_data(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('sharded') / 'data')
  count = reshard(DATA_ROOT, data_dir, SHARDS)
  assert len(os.listdir(data_dir)) == SHARDS
  return data_dir, count


COMPARED_UP_TO = {'COCO_RUN_TO': 'Transform'}


def run_mode(tmp_path_factory, data_dir, mode, extra=None):
  output_dir = str(tmp_path_factory.mktemp(mode))
  env = dict(os.environ, COCO_OUTPUT_DIR=output_dir, COCO_DATA_ROOT=data_dir,
             COCO_BEAM_MODE=mode, COCO_VOCAB_SIZE=str(VOCAB_SIZE),
             COCO_TRAIN_STEPS='10', COCO_STEPS_PER_EPOCH='10')
  env.update(extra or {})
  result = run_local(env)
  assert result.returncode == 0, result.stdout + result.stderr
  assert f'with Beam {mode}' in result.stdout
  return Outputs(output_dir)


@pytest.fixture(scope='module')
def in_memory(tmp_path_factory, sharded_data):
  return run_mode(tmp_path_factory, sharded_data[0], 'in_memory', COMPARED_UP_TO)


def assert_same_results(run: Outputs, reference: Outputs, csv_rows: int):
  assert run.states() == {'COMPLETE'}
  examples = reference.example_counts('Examples', 'CsvExampleGen')
  assert sum(examples.values()) == csv_rows
  assert run.example_counts('Examples', 'CsvExampleGen') == examples
  assert run.statistics_counts() == reference.statistics_counts() == examples
  assert (run.example_counts('Examples', 'Transform')
          == reference.example_counts('Examples', 'Transform') == examples)
  vocab = reference.vocabulary().splitlines()
  assert len(vocab) == VOCAB_SIZE
  assert run.vocabulary() == reference.vocabulary()


def test_in_memory_reference_sees_every_row(in_memory, sharded_data):
  data_dir, rows = sharded_data
  assert sum(in_memory.example_counts('Examples', 'CsvExampleGen').values()) == rows
  captions = []
  for path in glob.glob(os.path.join(data_dir, '*.csv')):
    with open(path, newline='', encoding='utf-8') as f:
      captions += [r['caption'] for r in csv.DictReader(f)]
  distinct_tokens = set(tokenize(tf.constant(captions)).flat_values.numpy().tolist())
  assert len(distinct_tokens) > VOCAB_SIZE  # so the top-k cut is exercised


def test_multi_processing_two_workers_matches_in_memory(tmp_path_factory, sharded_data, in_memory):
  data_dir, rows = sharded_data
  with TreeSampler(os.getpid()) as watcher:
    run = run_mode(tmp_path_factory, data_dir, 'multi_processing', {'COCO_BEAM_WORKERS': '2'})
  # Proof the mode took effect: Beam spawned separate SDK worker processes.
  assert len(watcher.workers) >= 2, watcher.workers
  assert_same_results(run, in_memory, rows)


def test_portable_runner_job_service_matches_in_memory(tmp_path_factory, sharded_data, in_memory):
  data_dir, rows = sharded_data
  port_file = str(tmp_path_factory.mktemp('jobservice') / 'port')
  service = subprocess.Popen(
      [sys.executable, '-m', 'apache_beam.runners.portability.local_job_service_main',
       '--port', str(free_port()), '--port_file', port_file],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 60
    while not os.path.exists(port_file) and time.time() < deadline:
      time.sleep(0.2)
    with open(port_file) as f:
      endpoint = f'localhost:{f.read().strip()}'
    run = run_mode(tmp_path_factory, data_dir, 'portable',
                   {'COCO_BEAM_JOB_ENDPOINT': endpoint, 'COCO_BEAM_ENVIRONMENT': 'LOOPBACK',
                    **COMPARED_UP_TO})
    # Proof the mode took effect: the job service itself ran the Beam jobs.
    with grpc.insecure_channel(endpoint) as channel:
      jobs = beam_job_api_pb2_grpc.JobServiceStub(channel).GetJobs(
          beam_job_api_pb2.GetJobsRequest(), timeout=30).job_info
    done = [j for j in jobs if j.state == beam_job_api_pb2.JobState.DONE]
    assert len(done) >= 3, jobs  # ExampleGen, StatisticsGen, Transform (+ analyzers)
  finally:
    service.terminate()
    service.wait(timeout=30)
  assert_same_results(run, in_memory, rows)
