"""The before/after table of the test suite's slow tests, from two pytest logs.

    python bench/test_durations.py BEFORE.log AFTER.log [--over 10] > table.md

Each log is the output of a pytest run with `--durations=0` (`make test`
prints the slowest 25; for the table run it with `--durations=0`). A test's
seconds are its setup + call + teardown, so the fixture a test is the first
to use counts towards it, as pytest reports it; under xdist a shared fixture
is paid by the first test of its worker that uses it. Tests over `--over`
seconds in either log are listed, slowest first.
"""

import argparse
import collections
import re
import sys
from typing import Dict

LINE = re.compile(r'^\s*([0-9.]+)s (setup|call|teardown)\s+(\S.*)$')


def durations(path: str) -> Dict[str, float]:
  """Seconds per test id (setup + call + teardown) in a pytest log."""
  found = collections.defaultdict(float)
  with open(path, encoding='utf-8', errors='replace') as f:
    for line in f:
      match = LINE.match(line)
      if match:
        found[match.group(3).strip()] += float(match.group(1))
  return dict(found)


def table(before: Dict[str, float], after: Dict[str, float], over: float) -> str:
  names = sorted({n for n, s in list(before.items()) + list(after.items()) if s > over},
                 key=lambda n: -max(before.get(n, 0), after.get(n, 0)))
  show = lambda d, n: f'{d[n]:.1f}' if n in d else '-'
  rows = ['| test | before (s) | after (s) |', '| --- | ---: | ---: |']
  rows += [f'| `{n}` | {show(before, n)} | {show(after, n)} |' for n in names]
  rows.append(f'| **all tests, summed** | {sum(before.values()):.0f} | {sum(after.values()):.0f} |')
  return '\n'.join(rows)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('before')
  parser.add_argument('after')
  parser.add_argument('--over', type=float, default=10.0, help='seconds (default 10)')
  args = parser.parse_args(argv)
  print(table(durations(args.before), durations(args.after), args.over))
  return 0


if __name__ == '__main__':
  sys.exit(main())
