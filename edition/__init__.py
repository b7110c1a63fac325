"""The book's published edition: stored reference runs of the chapters and how the website uses them.

- :mod:`edition.chapters`: which files are chapters, read as notebooks, and their code fingerprint;
- :mod:`edition.store`: a reference run on disk (``book/_reference/<chapter>.ipynb``) and its provenance;
- :mod:`edition.status`: fresh or stale, for each chapter, against the current code;
- :mod:`edition.banner`: the provenance header or the "not the reference" banner of a page;
- :mod:`edition.run`: ``make reference``, executing chapters and storing them;
- :mod:`edition.sphinx_ext`: the Jupyter Book extension that renders fresh chapters from their references.

Used as a Sphinx extension (``_config.yml``), ``setup`` comes from :mod:`edition.sphinx_ext`.
"""


def setup(app):  # Sphinx entry point; imported lazily so the CLI does not need Sphinx
    from .sphinx_ext import setup as _setup

    return _setup(app)
