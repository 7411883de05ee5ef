"""Sphinx configuration of the sklearn_arcsm documentation.

Build (from the repository root)::

    python -m sphinx -W -b html docs docs/_build/html

Environment variables:

``SKLEARN_ARCSM_DOCS_OFFLINE=1``
    Disable intersphinx (no network access needed), so ``-W`` builds work
    offline. Cross-references to numpy, scikit-learn, torch... then render
    as plain text.
``SKLEARN_ARCSM_DOCS_NO_EXAMPLES=1``
    Build the example gallery without executing the examples (no figures or
    printed output; a few seconds instead of several minutes).
"""

import os
import re

import sklearn_arcsm

# -- Project -----------------------------------------------------------------
project = "sklearn_arcsm"
author = "sklearn_arcsm developers"
copyright = "2026, sklearn_arcsm developers"
release = sklearn_arcsm.__version__
version = ".".join(release.split(".")[:2])

OFFLINE = os.environ.get("SKLEARN_ARCSM_DOCS_OFFLINE", "0") not in ("", "0")
RUN_EXAMPLES = os.environ.get("SKLEARN_ARCSM_DOCS_NO_EXAMPLES", "0") in ("", "0")

# -- General -----------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
if not OFFLINE:
    extensions.append("sphinx.ext.intersphinx")

templates_path = ["_templates"]
exclude_patterns = ["_build", "_templates", "Thumbs.db", ".DS_Store"]
default_role = "literal"
nitpicky = False

autosummary_generate = True
autodoc_default_options = {}
autodoc_typehints = "none"

# numpydoc renders the Parameters/Returns sections; its own autosummary of
# class members would duplicate autodoc's member documentation.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- Cross-references to other projects ------------------------------------
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "sklearn": ("https://scikit-learn.org/stable/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
    "skorch": ("https://skorch.readthedocs.io/en/stable/", None),
    "matplotlib": ("https://matplotlib.org/stable/", None),
}

# -- Example gallery ---------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "plot_gallery": "True" if RUN_EXAMPLES else "False",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    # Links from the examples to the API pages (local names only offline).
    "reference_url": {"sklearn_arcsm": None},
    "doc_module": ("sklearn_arcsm",),
    "backreferences_dir": "gen_modules/backreferences",
    # Keep generated files out of the source tree (sg_execution_times.rst).
    "write_computation_times": False,
}

# -- HTML --------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"sklearn_arcsm {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_prev_next": False,
}
html_static_path = []


# -- Docstring fix-ups -------------------------------------------------------
# In reST, a word ending in "_" is a hyperlink reference, so a shape written
# "(n_features_in_,)" in a numpydoc type line is an error. scikit-learn's own
# docstrings quote such names with backticks; this quotes the ones that are
# not, before numpydoc parses the docstring (default_role is "literal").
_SHAPE_NAME = re.compile(r"(?<![`\w])([A-Za-z]\w*_)(?=[,)])")


def _quote_trailing_underscore_names(app, what, name, obj, options, lines):
    for index, line in enumerate(lines):
        head, sep, shape = line.partition("shape (")
        if sep:
            lines[index] = head + sep + _SHAPE_NAME.sub(r"`\1`", shape)


def setup(app):
    app.connect(
        "autodoc-process-docstring", _quote_trailing_underscore_names, priority=100
    )
