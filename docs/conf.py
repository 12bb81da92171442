"""Sphinx configuration of the API reference (``sphinx-build -W -b html docs docs/_build``)."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))  # document this checkout, not an installed copy

project = "captum_masks"
author = "captum_masks developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the Args sections carry the types, as in Captum's docs
html_theme = "alabaster"
exclude_patterns = ["_build"]
