import os

from hypothesis import settings

# Few examples by default (CI budget), more with HYPOTHESIS_PROFILE=thorough.
settings.register_profile("ci", max_examples=25, deadline=None)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
