"""``python -m napari_lgg_seg`` runs the command line."""

import sys

from .cli import main

sys.exit(main())
