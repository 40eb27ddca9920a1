"""The before/after table of the test suite's slow tests, from pytest logs.

    python bench/test_durations.py BEFORE.log AFTER.log [MORE.log ...] \
        [--names 'before;after;...'] [--over 10] > table.md

Each log is the output of a pytest run with `--durations=N` (`make test`
prints the slowest 30, which covers every test over 10 s; `--durations=0`
lists all). A test's seconds are its setup + call + teardown, so the fixture
a test is the first to use counts towards it, as pytest reports it; under
pytest-xdist a shared fixture is paid by the first test of its worker that
uses it, and two tests running at once each take longer than alone. Tests
over `--over` seconds in any log are listed, slowest first; '-' is a test
under pytest's reporting cut-off in that log.
"""

import argparse
import collections
import re
import sys
from typing import Dict, List, Sequence

LINE = re.compile(r'^\s*([0-9.]+)s (setup|call|teardown)\s+(\S.*)$')


def durations(path: str) -> Dict[str, float]:
  """Seconds per test id (setup + call + teardown) in a pytest log."""
  found = collections.defaultdict(float)
  with open(path, encoding='utf-8', errors='replace') as f:
    for line in f:
      match = LINE.match(line)
      if match:   # under xdist --dist loadgroup an id ends in @<group>
        found[match.group(3).strip().split('@')[0]] += float(match.group(1))
  return dict(found)


def table(logs: Sequence[Dict[str, float]], names: Sequence[str], over: float) -> str:
  slow = {n for log in logs for n, s in log.items() if s > over}
  ordered: List[str] = sorted(slow, key=lambda n: -max(log.get(n, 0) for log in logs))
  show = lambda log, n: f'{log[n]:.1f}' if n in log else '-'
  rows = ['| test | ' + ' | '.join(f'{name} (s)' for name in names) + ' |',
          '| --- |' + ' ---: |' * len(names)]
  rows += [f'| `{n}` | ' + ' | '.join(show(log, n) for log in logs) + ' |' for n in ordered]
  return '\n'.join(rows)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('logs', nargs='+')
  parser.add_argument('--names', help='column names, separated by semicolons (default: the file names)')
  parser.add_argument('--over', type=float, default=10.0, help='seconds (default 10)')
  args = parser.parse_args(argv)
  names = args.names.split(';') if args.names else args.logs
  if len(names) != len(args.logs):
    parser.error(f'{len(args.logs)} logs but {len(names)} names')
  print(table([durations(path) for path in args.logs], names, args.over))
  return 0


if __name__ == '__main__':
  sys.exit(main())
