"""The Flink cluster of a `COCO_BEAM_MODE=flink` run, seen through its REST API.

Before the run, `check_reachable` turns a cluster (or job server) that is not
there into one line naming it, instead of the gRPC trace Beam's PortableRunner
gives minutes later. After it, `jobs` lists the Flink jobs, and
`jobs_of` picks those a component ran: each Beam stage's job is named
`<pipeline>-<component>` (pipeline/beam_args.py `job_name_args`), and only
jobs that started while that component's execution ran count.

    python -m pipeline.orchestration.flink shell   # the settings tools/flink.sh uses

`shell` prints the cluster's addresses from pipeline/settings.py as shell
assignments, so the script that starts the local cluster and the pipeline
that uses it read them from one place.
"""

import dataclasses
import json
import socket
import sys
import urllib.error
import urllib.request
from typing import List, Sequence

from pipeline.settings import BeamSettings, Settings, variable

TIMEOUT_SECONDS = 5.0


class EngineUnavailable(RuntimeError):
  """The cluster a run needs does not answer; the message is one line."""


@dataclasses.dataclass(frozen=True)
class FlinkJob:
  jid: str
  name: str
  state: str
  start_ms: int
  duration_ms: int


def split_endpoint(endpoint: str):
  """`host:port` (or a URL) -> (host, port)."""
  address = endpoint.split('://', 1)[-1].split('/', 1)[0]
  host, _, port = address.rpartition(':')
  return host or 'localhost', int(port)


def answers(endpoint: str, timeout: float = TIMEOUT_SECONDS) -> bool:
  """Whether something accepts TCP connections at `host:port`."""
  try:
    with socket.create_connection(split_endpoint(endpoint), timeout=timeout):
      return True
  except (OSError, ValueError):
    return False


def rest(url: str, path: str, timeout: float = TIMEOUT_SECONDS):
  with urllib.request.urlopen(url.rstrip('/') + path, timeout=timeout) as answer:
    return json.load(answer)


def is_local(endpoint: str) -> bool:
  return split_endpoint(endpoint)[0] in ('localhost', '127.0.0.1', '::1')


def check_reachable(beam: BeamSettings) -> None:
  """Raises EngineUnavailable naming the first piece of the Flink setup that
  does not answer: the master (REST), Beam's job server, and a local worker
  pool (one on another host is reached by the TaskManagers, not by us)."""
  start = 'start the local one with `make flink-up` (tools/flink.sh up)'
  try:
    rest(beam.flink_rest, '/overview')
  except (OSError, ValueError, urllib.error.URLError) as error:
    reason = getattr(error, 'reason', error)
    raise EngineUnavailable(
        f'no Flink cluster answers at {beam.flink_rest} '
        f'({variable(BeamSettings, "flink_master")}): {reason}; {start}, or set '
        f'{variable(BeamSettings, "flink_master")} to yours') from None
  if not answers(beam.flink_job_endpoint):
    raise EngineUnavailable(
        f"Beam's Flink job server does not answer at {beam.flink_job_endpoint} "
        f'({variable(BeamSettings, "flink_job_endpoint")}), though Flink answers at '
        f'{beam.flink_rest}; {start}')
  if (beam.flink_environment == 'EXTERNAL' and is_local(beam.flink_workers)
      and not answers(beam.flink_workers)):
    raise EngineUnavailable(
        f'no Beam SDK worker pool answers at {beam.flink_workers} '
        f'({variable(BeamSettings, "flink_workers")}); {start}')


def jobs(url: str) -> List[FlinkJob]:
  """Every job the cluster knows (running and finished)."""
  return [FlinkJob(j['jid'], j['name'], j['state'], j['start-time'], j['duration'])
          for j in rest(url, '/jobs/overview')['jobs']]


def jobs_of(known: Sequence[FlinkJob], name: str, start_ms: int, end_ms: int) -> List[FlinkJob]:
  """The jobs named `name` that started within [start_ms, end_ms]: one
  component execution's jobs, oldest first."""
  return sorted((j for j in known if j.name == name and start_ms <= j.start_ms <= end_ms),
                key=lambda j: j.start_ms)


def shell_lines(beam: BeamSettings) -> List[str]:
  """What tools/flink.sh needs to know, as `name=value` lines."""
  _, rest_port = split_endpoint(beam.flink_master)
  _, job_port = split_endpoint(beam.flink_job_endpoint)
  _, pool_port = split_endpoint(beam.flink_workers)
  return [f'rest={beam.flink_rest}', f'rest_port={rest_port}', f'job_port={job_port}',
          f'pool_port={pool_port}', f'parallelism={beam.flink_parallelism}']


if __name__ == '__main__':
  if sys.argv[1:] != ['shell']:
    sys.exit('usage: python -m pipeline.orchestration.flink shell')
  print('\n'.join(shell_lines(Settings.from_env().beam)))
