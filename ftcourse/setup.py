"""The first cell of every notebook: device, profile and versions, printed."""
from __future__ import annotations


def notebook_setup(profile_name: str | None = None):
    """Print device, profile and versions; return the active :class:`~ftcourse.profiles.Profile`."""
    import platform

    import datasets
    import torch
    import transformers

    from . import __version__
    from .profiles import get_profile
    from .train import pick_device

    profile = get_profile(profile_name)
    device = pick_device()
    print(f"profile: {profile.name} (model {profile.model_id}, {profile.train_size} training examples, "
          f"{profile.epochs} epochs, batch {profile.batch_size}, seeds {list(profile.seeds)})")
    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"datasets {datasets.__version__}, ftcourse {__version__}")
    return profile, device
