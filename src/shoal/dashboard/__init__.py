"""The dashboard: a static web page (``static/``) that the control API serves.

Plain JavaScript, no build step; its two libraries (cytoscape for the service
graph, uPlot for the charts) are vendored as built files under
``static/vendor/`` by ``scripts/vendor-dashboard.sh``, so shoal needs neither
Node.js nor the internet at run time. The serving and the login are in
:mod:`shoal.control._dashboard`; the page reads the control API's ``GET /v1/*``.
"""

from __future__ import annotations

__all__: list[str] = []
