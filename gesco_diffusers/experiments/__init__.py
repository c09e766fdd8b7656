"""Experiments that reproduce the paper's analyses.

* :mod:`gesco_diffusers.experiments.map_level`: received-map mIoU per channel model, without and with FDS
  (``python -m gesco_diffusers.experiments.map_level``).

Nothing is imported here, so that ``python -m gesco_diffusers.experiments.<name>`` runs each module exactly once.
"""
