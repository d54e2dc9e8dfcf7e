"""Which profile a model gets under the instrumentor's settings, resolved once per model type.

A profile file named in the settings applies to every model; otherwise each
`config.model_type` gets its own profile. The settings' overrides apply on top. Never raises:
overrides that do not fit an architecture's profile are logged and that architecture's own
profile is used (the settings were validated against the default profile when they were made).
"""

from __future__ import annotations

import logging
from typing import Mapping

from . import Profile, load_profile, load_profile_file

_logger = logging.getLogger(__name__)


class ProfileResolver:
    def __init__(self, profile_file: str | None, overrides: Mapping[str, object] | None):
        self._profile_file = profile_file
        self._overrides = dict(overrides) if overrides else None
        self._by_model_type: dict[str, Profile] = {}

    def for_model_type(self, model_type: str | None = None) -> Profile:
        key = str(model_type or "")
        cached = self._by_model_type.get(key)
        if cached is None:
            cached = self._by_model_type[key] = self._resolve(key)
        return cached

    def for_model(self, model) -> Profile:
        config = getattr(model, "config", None)
        return self.for_model_type(getattr(config, "model_type", "") or "")

    def _resolve(self, model_type: str) -> Profile:
        if self._profile_file:
            return load_profile_file(self._profile_file, self._overrides)
        try:
            return load_profile(model_type, self._overrides)
        except ValueError as exc:
            _logger.warning(
                "CoreVital profile overrides do not apply to model type %r (%s); using its own profile",
                model_type, exc,
            )
            return load_profile(model_type)


def capture_thresholds(profile: Profile) -> dict:
    """The CaptureOptions keyword arguments that come from the profile."""
    return {
        "collapsed_head_entropy_bits": float(profile.collapsed_head_entropy_bits),
        "focused_head_concentration": float(profile.focused_head_concentration),
    }
