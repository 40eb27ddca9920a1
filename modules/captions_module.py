"""The TFX module file: what Transform and Trainer load.

TFX wheels every .py file of this folder and fingerprints them, so editing
any of them invalidates the cached Transform/Trainer runs. The code itself is
imported from the installed `modules` package (see README), which makes it
import the same way in every process, Beam workers included.
"""

from modules.trainer import run_fn  # noqa: F401  (Trainer entry point)
from modules.preprocessing import preprocessing_fn  # noqa: F401  (Transform entry point)
