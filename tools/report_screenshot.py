"""Screenshot of a run report for the docs: headless Chromium, offline.

    .venv/bin/python tools/report_screenshot.py REPORT.html docs/report.png

Renders at a fixed width in a tall window, crops the empty background below
the page and stores the PNG with a 128-colour palette (the page has few
colours; this keeps docs/report.png small without blurring text).
"""

import argparse
import os
import subprocess
import sys
import tempfile

from PIL import Image, ImageChops

CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')   # tools/test-deps.sh installs it


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('report')
  parser.add_argument('output')
  parser.add_argument('--width', type=int, default=1200)
  parser.add_argument('--max-height', type=int, default=8000)
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    shot = os.path.join(tmp, 'shot.png')
    subprocess.run([CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars',
                    f'--user-data-dir={tmp}/profile', '--no-first-run',
                    '--disable-background-networking', '--host-resolver-rules=MAP * ~NOTFOUND',
                    f'--window-size={args.width},{args.max_height}', f'--screenshot={shot}',
                    'file://' + os.path.abspath(args.report)],
                   check=True, capture_output=True, timeout=180)
    image = Image.open(shot).convert('RGB')
  background = Image.new('RGB', image.size, image.getpixel((image.width - 1, image.height - 1)))
  box = ImageChops.difference(image, background).getbbox()
  if box:
    image = image.crop((0, 0, image.width, min(image.height, box[3] + 24)))
  image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(args.output, optimize=True)
  print(f'{args.output}: {image.width}x{image.height}, {os.path.getsize(args.output) // 1024} KB')
  return 0


if __name__ == '__main__':
  sys.exit(main())
