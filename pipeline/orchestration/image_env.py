"""An environment like the component image, without Docker: a virtualenv made
by the script the Dockerfile runs (`tools/image-install.sh`: the locked
dependencies, then this project's wheel with `--no-deps`), with the image's
`ENV` variables, used from a working directory outside the checkout.

The Dockerfile is the one description of the image; this module reads it
(its FROM, COPY and ENV lines) instead of repeating it, and
tests/test_rehearsal.py checks that the two cannot drift: the Dockerfile
calls the same script, its Python is the virtualenv's, its Beam the lock's.
"""

import fcntl
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
HASH_FILE = '.image-env-hash'        # the dependencies key the venv was made with
SOURCES_FILE = '.image-sources-hash'  # the sources key its project wheel was built from
VENV_PREFIX = 'venv-image-'
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


def context_files(project_dir: str = PROJECT_DIR) -> List[str]:
  """Every file the Dockerfile copies, relative to `project_dir`, sorted
  (bytecode caches left out: Python writes them, nobody edits them)."""
  found = []
  for source in copied_sources(os.path.join(project_dir, 'Dockerfile')):
    path = os.path.join(project_dir, source)
    if not os.path.isdir(path):
      found.append(source)
      continue
    for root, dirs, names in os.walk(path):
      dirs[:] = [d for d in dirs if d != '__pycache__']
      found += [os.path.relpath(os.path.join(root, n), project_dir)
                for n in names if not n.endswith('.pyc')]
  return sorted(found)


def copy_context(target: str, project_dir: str = PROJECT_DIR) -> None:
  """What the Dockerfile copies, into `target` (so the wheel build's build/
  and *.egg-info never land in the checkout)."""
  for name in context_files(project_dir):
    os.makedirs(os.path.dirname(os.path.join(target, name)), exist_ok=True)
    shutil.copy(os.path.join(project_dir, name), os.path.join(target, name))


def files_hash(project_dir: str, names: List[str], *extra: str) -> str:
  digest = hashlib.sha256()
  for text in extra:
    digest.update(text.encode() + b'\0')
  for name in names:
    digest.update(name.encode() + b'\0')
    with open(os.path.join(project_dir, name), 'rb') as f:
      digest.update(hashlib.sha256(f.read()).digest())
  return digest.hexdigest()[:16]


def dependencies_key(project_dir: str = PROJECT_DIR, python: Optional[str] = None) -> str:
  """What the environment's installed dependencies follow: the lock, the
  install script, the Dockerfile and the Python that makes the venv. A cached
  environment with another key is never reused: it is made anew."""
  version = subprocess.run([python or sys.executable, '-c', 'import sys; print(sys.version)'],
                           capture_output=True, text=True, check=True, timeout=60).stdout
  return files_hash(project_dir, [LOCK_FILE, INSTALL_SCRIPT, 'Dockerfile'], version)


def sources_key(project_dir: str = PROJECT_DIR) -> str:
  """Everything the Dockerfile copies (pipeline/, modules/, setup.py, the lock,
  ...): the project wheel in the environment is the one built from these."""
  return files_hash(project_dir, context_files(project_dir))


def default_venv(cache_dir: str, project_dir: str = PROJECT_DIR,
                 python: Optional[str] = None) -> str:
  """The image-like venv under the cache directory, one per dependencies key,
  shared by every clone (it outlives them; ~3.5 GB)."""
  return os.path.join(cache_dir, f'{VENV_PREFIX}{dependencies_key(project_dir, python)}')


def venv_of(run) -> str:
  """The venv a rehearsal with these RunSettings uses: COCO_IMAGE_VENV, or the
  cache's one for the current dependencies key."""
  return run.image_venv or default_venv(run.cache_dir)


def marker(venv: str, name: str) -> Optional[str]:
  path = os.path.join(venv, name)
  return open(path, encoding='utf-8').read().strip() if os.path.exists(path) else None


def build(venv: str, log: str, python: Optional[str] = None,
          project_dir: str = PROJECT_DIR) -> str:
  """Makes or updates `venv` like the image; returns its bin directory.

  Always with the Dockerfile's own install script, and reused only for the
  inputs it was made from: a venv whose dependencies key (lock, script,
  Dockerfile, Python) differs is removed and made anew (~3 minutes from
  pip's cache); one whose project sources differ has the script run again,
  which keeps the installed dependencies and rebuilds the project wheel
  (~25 s); one made from exactly these inputs is used as it is. One build
  at a time per venv (a file lock beside it); the markers are written only
  after the script succeeded, so a killed build is never taken for a made one.
  """
  python = python or sys.executable
  bin_dir = os.path.join(venv, 'bin')
  dependencies, sources = dependencies_key(project_dir, python), sources_key(project_dir)
  os.makedirs(os.path.dirname(os.path.abspath(venv)), exist_ok=True)
  with open(venv.rstrip('/') + '.lock', 'a') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if marker(venv, HASH_FILE) != dependencies and os.path.exists(venv):
      shutil.rmtree(venv)
    if not os.path.exists(os.path.join(bin_dir, 'python')):
      subprocess.run([python, '-m', 'venv', venv], check=True, timeout=300)
    if marker(venv, SOURCES_FILE) != sources:
      if os.path.exists(os.path.join(venv, SOURCES_FILE)):   # a failed run may leave half a wheel
        os.remove(os.path.join(venv, SOURCES_FILE))
      with tempfile.TemporaryDirectory(prefix='coco-image-context-') as context, \
           open(log, 'a', encoding='utf-8') as out:
        copy_context(context, project_dir)
        result = subprocess.run(['sh', os.path.join(context, INSTALL_SCRIPT),
                                 os.path.join(bin_dir, 'python'), context],
                                stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT,
                                env=clean_env(bin_dir, {}))
      if result.returncode != 0:
        raise ImageEnvError(f'{INSTALL_SCRIPT} failed with {result.returncode}; log: {log}')
      for name, value in ((HASH_FILE, dependencies), (SOURCES_FILE, sources)):
        with open(os.path.join(venv, name), 'w', encoding='utf-8') as f:
          f.write(value + '\n')
  if os.path.basename(venv.rstrip('/')).startswith(VENV_PREFIX):
    prune(os.path.dirname(os.path.abspath(venv)), keep=venv)
  return bin_dir


def prune(cache_dir: str, keep: str) -> List[str]:
  """Removes the cache's other image venvs (made from another lock, script or
  Dockerfile) that no build holds at the moment, so the cache does not grow
  by ~3.5 GB per lock change; returns what it removed. (Two clones at
  different locks rehearsing on one machine each remake their venv in turn.)"""
  removed = []
  for name in sorted(os.listdir(cache_dir)):
    path = os.path.join(cache_dir, name)
    if (not name.startswith(VENV_PREFIX) or name.endswith('.lock')
        or os.path.abspath(path) == os.path.abspath(keep) or marker(path, HASH_FILE) is None):
      continue
    with open(path + '.lock', 'a') as lock:
      try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        continue
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
    os.remove(path + '.lock')
  return removed


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
