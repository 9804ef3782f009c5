"""edgesdk.serve: a bundle behind HTTP (TEI / OpenAI style), on Ray Serve, or as a Triton model repository.

Sits on top of the on-device runtime and imports nothing from the export side (only edgesdk.runtime and
edgesdk.errors; import-linter enforces it). Needs pip install 'edgesdk[serve]'.

    edgesdk serve dist/all-minilm-l6-v2-onnxruntime-int8 --port 8080
    from edgesdk.serve import ServeOptions, build_app      # a Starlette app, e.g. for your own ASGI server
"""

__all__ = ["ServeOptions", "build_app", "serve"]


def __getattr__(name: str):
    # lazy, so `edgesdk --help` (which registers the subcommands) does not import numpy, starlette or a runtime
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)
