"""Sphinx configuration of smilfit's documentation site.

Sphinx with MyST (Markdown pages, as mmengine and mmpose build their sites) and myst-nb,
which executes the tutorial notebook and renders it with its outputs. Build with warnings
as errors::

    python -m sphinx -W -b html docs docs/_build/html

``SMILFIT_DOCS_EXECUTE=off`` renders the notebook without running it (a quick build).
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from smilfit.version import __version__  # noqa: E402

project = 'smilfit'
author = 'the smilfit developers'
copyright = '2026, the smilfit developers'
release = version = __version__

extensions = [
    'myst_nb',                    # Markdown pages (MyST) and the executed notebook
    'sphinx.ext.autodoc',         # the API reference from the docstrings
    'sphinx.ext.napoleon',        # Google-style Args/Returns/Raises sections
    'sphinx.ext.viewcode',
]
source_suffix = {'.md': 'myst-nb', '.ipynb': 'myst-nb'}
# tables/: the benchmarks' tables, included by the pages (not pages of their own).
exclude_patterns = ['_build', 'tables', 'Thumbs.db', '.DS_Store', '**.ipynb_checkpoints']

# Headings get anchors so pages can link to sections (`page.md#a-heading`).
myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence', 'deflist']

# The tutorial runs from the repository root (it reads configs/) in a fresh kernel; a
# failing cell fails the build.
nb_execution_mode = os.environ.get('SMILFIT_DOCS_EXECUTE', 'force')
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True

autodoc_default_options = {'members': True, 'show-inheritance': True}
autodoc_member_order = 'bysource'
autodoc_typehints = 'description'
# Documented where they are defined: a package's re-exports are not repeated.
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Attributes sections as fields: a NamedTuple's fields are not described twice.
napoleon_use_ivar = True
# Names a docstring may mention without a page of their own here.
nitpicky = False

html_theme = 'furo'
html_title = f'smilfit {release}'
html_static_path = []
