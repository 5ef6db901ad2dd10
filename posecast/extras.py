"""The optional parts of the install (pyproject.toml's extras) and a one-line error that names
the extra to install when a command needs one that is missing.

The default install renders, trains and distils posecast's own pixel-space models; the
MimicMotion family (SVD's UNet, VAE and CLIP encoder) needs diffusers and transformers, and a
DiT with a VAE codec (the `base` preset) needs diffusers.
"""

from __future__ import annotations

import importlib.util

from posecast.errors import UsageError

# extra → what needs it, and the modules it installs (the distributions have the same names)
EXTRAS = {"mimicmotion": ("MimicMotion models", ("diffusers", "transformers")),
          "vae": ("Models with a VAE codec", ("diffusers",))}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # a module set to None in sys.modules: an import would fail
        return False


def require_extra(extra: str) -> None:
    """A UsageError naming `pip install 'posecast[EXTRA]'` when a module of `extra` is
    missing."""
    what, modules = EXTRAS[extra]
    missing = [module for module in modules if not _installed(module)]
    if missing:
        raise UsageError(f"{what} need {' and '.join(missing)}, which the default install "
                         f"leaves out: pip install 'posecast[{extra}]'")
