"""Run at the start of every kernel the book build executes (an IPython startup file).

``book/course.py`` points the kernels' ``IPYTHONDIR`` at a folder whose ``profile_default/startup``
holds this file, so the book's figures go through the renderer below while a learner's own
kernels keep plotly's default. The library (``tutorlib.plotting``) never touches plotly's global
renderer.

The renderer writes a ``<div>`` and its ``Plotly.newPlot`` call and nothing else: neither plotly.js
nor MathJax (plotly's HTML renderers embed 3.5 MB of plotly.js per notebook, or load it and MathJax
from a CDN). The book's Sphinx extension (``course_book.py``) serves plotly.js from the site and
loads it on each page that has a figure, so the site works offline.
"""

import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer

BOOK_RENDERER = "tutorlib_book"


class BookRenderer(MimetypeRenderer):
    """Figures as HTML without plotly.js (served once by the site) and without MathJax."""

    def to_mimebundle(self, fig_dict):
        html = pio.to_html(fig_dict, include_plotlyjs=False, include_mathjax=False, full_html=False,
                           auto_play=False, default_width="100%", default_height=525, validate=False,
                           config={"displaylogo": False, "responsive": True})
        return {"text/html": html}


pio.renderers[BOOK_RENDERER] = BookRenderer()
pio.renderers.default = BOOK_RENDERER
