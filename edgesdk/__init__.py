"""edgesdk: verified, device-ready bundles of neural networks for edge targets.

    import edgesdk
    result = edgesdk.export(edgesdk.ExportOptions(targets=("intel",), out="dist"))
    from edgesdk.runtime import load          # on the device: numpy + tokenizers + one runtime

Heavy libraries are imported only inside the functions that need them, so `import edgesdk` is fast.
"""

from .version import __version__  # noqa: E402

from .errors import EdgeSDKError  # noqa: E402  (light: no third-party imports)


def __getattr__(name: str):
    """Lazy public API: export/ExportOptions pull in the export side only when used."""
    if name in ("export", "ExportOptions", "ExportResult"):
        from . import api

        return getattr(api, name)
    if name in ("load_profile", "list_targets", "TargetProfile"):
        from . import profiles

        return getattr(profiles, name)
    raise AttributeError(f"module 'edgesdk' has no attribute '{name}'")


__all__ = ["EdgeSDKError", "ExportOptions", "ExportResult", "export", "list_targets", "load_profile", "__version__"]
