"""An environment like the component image, without Docker: a virtualenv made
by the script the Dockerfile runs (`tools/image-install.sh`: the locked
dependencies, then this project's wheel with `--no-deps`), with the image's
`ENV` variables, used from a working directory outside the checkout.

The Dockerfile is the one description of the image; this module reads it
(its FROM, COPY and ENV lines) instead of repeating it, and
tests/test_rehearsal.py checks that the two cannot drift: the Dockerfile
calls the same script, its Python is the virtualenv's, its Beam the lock's.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Mapping, Optional, Tuple

from pipeline.settings import PROJECT_DIR

DOCKERFILE = os.path.join(PROJECT_DIR, 'Dockerfile')
INSTALL_SCRIPT = os.path.join('tools', 'image-install.sh')
LOCK_FILE = 'requirements.lock'
HASH_FILE = '.image-env-hash'
INSTALL_TIMEOUT = 1800


class ImageEnvError(RuntimeError):
  """The environment could not be made, or imports the project from the wrong place."""


def dockerfile_instructions(path: str = DOCKERFILE) -> List[Tuple[str, str]]:
  """(instruction, arguments) pairs of the Dockerfile, continuation lines joined."""
  with open(path, encoding='utf-8') as f:
    text = re.sub(r'\\\n', ' ', f.read())
  lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith('#')]
  return [tuple(l.split(None, 1)) for l in lines]


def dockerfile_env(path: str = DOCKERFILE) -> Dict[str, str]:
  """The image's ENV variables (`ENV K=V ...` or `ENV K V`)."""
  env = {}
  for op, args in dockerfile_instructions(path):
    if op != 'ENV':
      continue
    if '=' in args.split()[0]:
      env.update(pair.split('=', 1) for pair in args.split())
    else:
      name, value = args.split(None, 1)
      env[name] = value
  return env


def copied_sources(path: str = DOCKERFILE) -> List[str]:
  """Every path the Dockerfile copies from the build context (not `--from=` stages)."""
  sources = []
  for op, args in dockerfile_instructions(path):
    words = args.split()
    if op == 'COPY' and not words[0].startswith('--from='):
      sources += [s.rstrip('/') for s in words[:-1]]
  return sources


def copy_context(target: str) -> None:
  """What the Dockerfile copies, into `target` (so the wheel build's build/
  and *.egg-info never land in the checkout)."""
  for source in copied_sources():
    src = os.path.join(PROJECT_DIR, source)
    dst = os.path.join(target, source)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.path.isdir(src):
      shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
    else:
      shutil.copy(src, dst)


def lock_hash() -> str:
  with open(os.path.join(PROJECT_DIR, LOCK_FILE), 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]


def build(venv: str, log: str, python: Optional[str] = None) -> str:
  """Makes or updates `venv` like the image; returns its bin directory.

  A new venv takes the locked dependencies (~3 minutes from pip's cache); an
  existing one made from the same lock only has this project's wheel
  rebuilt and reinstalled (~25 s), so the code is always the checkout's.
  """
  python = python or sys.executable
  bin_dir = os.path.join(venv, 'bin')
  marker = os.path.join(venv, HASH_FILE)
  current = open(marker, encoding='utf-8').read().strip() if os.path.exists(marker) else None
  if current != lock_hash() and os.path.exists(venv):
    shutil.rmtree(venv)
  if not os.path.exists(os.path.join(bin_dir, 'python')):
    subprocess.run([python, '-m', 'venv', venv], check=True, timeout=300)
  with tempfile.TemporaryDirectory(prefix='coco-image-context-') as context, \
       open(log, 'a', encoding='utf-8') as out:
    copy_context(context)
    result = subprocess.run(['sh', os.path.join(context, INSTALL_SCRIPT),
                             os.path.join(bin_dir, 'python'), context],
                            stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT,
                            env=clean_env(bin_dir, {}))
  if result.returncode != 0:
    raise ImageEnvError(f'{INSTALL_SCRIPT} failed with {result.returncode}; log: {log}')
  with open(marker, 'w', encoding='utf-8') as f:
    f.write(lock_hash() + '\n')
  return bin_dir


def clean_env(bin_dir: str, image_env: Mapping[str, str]) -> Dict[str, str]:
  """A process environment with nothing of the caller's but HOME: the venv's
  bin first on PATH (so the spec's `python` is the venv's), the image's ENV,
  no PYTHONPATH, no COCO_* settings (the compiled spec carries those)."""
  return {'PATH': os.pathsep.join([bin_dir, '/usr/local/bin', '/usr/bin', '/bin']),
          'HOME': os.environ.get('HOME', '/tmp'), 'LANG': 'C.UTF-8',
          **image_env}


def task_env(bin_dir: str, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
  """The environment every rehearsed task runs in."""
  return dict(clean_env(bin_dir, dockerfile_env()), **(extra or {}))


def imported_from(env: Mapping[str, str], workdir: str, venv: str) -> Dict[str, str]:
  """Where a task process imports `pipeline` and `modules` from: the venv's
  site-packages, or an error (the checkout's source tree, say)."""
  probe = ("import json, modules, pipeline; "
           "print(json.dumps({'pipeline': pipeline.__file__, 'modules': modules.__file__}))")
  ran = subprocess.run(['python', '-c', probe], cwd=workdir, env=dict(env), capture_output=True,
                       text=True, timeout=300)
  if ran.returncode != 0:
    raise ImageEnvError(f'the task environment cannot import the project:\n{ran.stderr[-2000:]}')
  found = json.loads(ran.stdout.strip().splitlines()[-1])
  for package, path in found.items():
    if not os.path.realpath(path).startswith(os.path.realpath(venv) + os.sep):
      raise ImageEnvError(f'the task environment imports {package} from {path}, '
                          f'not from the wheel installed in {venv}')
  return found
