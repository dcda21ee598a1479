"""blend as a service: the REST API (FastAPI) beside the Gradio UI, with batching, caches, keys and limits.

    from blend.serve import create_app
    app = create_app(blend.load("shapes-mini"), demo=None)     # then: uvicorn.run(app)
"""
from .api import create_app
from .config import ServeConfig

__all__ = ["create_app", "ServeConfig"]
