"""``python -m napari_lgg_seg.cli`` runs the command line, like ``python -m napari_lgg_seg``."""

import sys

from . import main

sys.exit(main())
