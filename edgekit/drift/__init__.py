"""Drift tracking after deployment: the training data's profile that travels with an artifact, rolling-window
scores against it (serve, monitor), and sampled frames from drifted windows for re-calibration. numpy only."""
from .profile import Profile, attach_profile, load_profile
from .tracker import DriftTracker

__all__ = ["Profile", "attach_profile", "load_profile", "DriftTracker"]
