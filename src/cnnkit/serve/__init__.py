"""`cnnkit serve`: a trained run behind HTTP (FastAPI + uvicorn), with a web page.

    from cnnkit.serve import serve, create_app, load_handler, ServeLimits
    serve("runs/RUN")                                   # http://127.0.0.1:8000/
    app = create_app(load_handler("runs/RUN"), ServeLimits(timeout_s=5))   # for your own ASGI server

    app.py        routes (/, /healthz, /predict; /embed, /verify for embedders), JSON errors, serve()
    limits.py     what is refused before decoding: body size, pixel count, format (413/411/415/422)
    queue.py      worker threads off the event loop, bounded admission (503) and timeout (504)
    handlers.py   per-task work, chosen by the TaskInfo of the run's record["task"]: classifiers, embedders
    page.py       the self-contained upload page
"""

from cnnkit.serve.app import create_app, serve
from cnnkit.serve.handlers import ClassificationHandler, EmbeddingHandler, load_handler
from cnnkit.serve.limits import ServeError, ServeLimits

__all__ = ["ClassificationHandler", "EmbeddingHandler", "ServeError", "ServeLimits", "create_app", "load_handler",
           "serve"]
