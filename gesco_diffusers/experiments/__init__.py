"""Experiments that reproduce the paper's analyses.

* :mod:`gesco_diffusers.experiments.map_level`: received-map mIoU per channel model, without and with FDS
  (``python -m gesco_diffusers.experiments.map_level``).
* :mod:`gesco_diffusers.experiments.codec_bpp`: the bits per pixel of every codec on label-map and photo files, as a
  Markdown table (``gesco map-level --codecs``).

Nothing is imported here, so that ``python -m gesco_diffusers.experiments.<name>`` runs each module exactly once.
"""
