"""Fault injection for tests/test_publish.py, loaded by Python at start-up in
the runs that test puts this directory on PYTHONPATH for (never otherwise).

SLOW_PUSH_SECONDS=s: each file the Pusher copies into the serving directory
(`pipeline.components.pusher.copy_file`) first waits s seconds, like a slow
disk or network, so that the test can SIGKILL a push halfway. Nothing else
changes: the module is imported as usual, then that one function wrapped.
"""

import importlib.abc
import importlib.machinery
import os
import sys
import time

DELAY = float(os.environ.get('SLOW_PUSH_SECONDS', '0'))
MODULE = 'pipeline.components.pusher'


class _SlowPushes(importlib.abc.MetaPathFinder):

  def find_spec(self, name, path, target=None):
    if name != MODULE:
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    load = spec.loader.exec_module

    def exec_module(module):
      load(module)
      copy = module.copy_file

      def slow_copy(source, target):
        time.sleep(DELAY)
        copy(source, target)
      module.copy_file = slow_copy

    spec.loader.exec_module = exec_module
    return spec


if DELAY > 0:
  sys.meta_path.insert(0, _SlowPushes())
