"""Sphinx configuration of the docs site (``python -m sphinx -W -b html docs docs/_build``)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # document this checkout, not an installed copy

project = "captum_masks"
author = "captum_masks developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "myst_nb"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the Args sections carry the types, as in Captum's docs
html_theme = "alabaster"
html_static_path = ["_static"]
# tables/ holds the files bench commands write; the guide pages include them
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "tables"]
# the tutorials are shown with the outputs they were saved with: building runs no model
nb_execution_mode = "off"
myst_heading_anchors = 3
