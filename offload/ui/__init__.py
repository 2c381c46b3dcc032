"""``offload ui``: the app a person sees, in the browser (``pip install 'offload[ui]'``).

Overview (servers, distances, a map, running jobs), Jobs, New job and
Credits pages served on 127.0.0.1 by :mod:`offload.ui.app` over the user's
own :class:`~offload.Client`. Importing this package imports no web
library: :mod:`offload.ui.cli` loads Starlette and uvicorn only when the
command runs.
"""
