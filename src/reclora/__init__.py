"""RecLoRA: lifelong personalized low-rank adaptation of LLMs for recommendation.

The library is plain Python (no KFP imports); one subpackage per pipeline stage.
Importing it turns off the telemetry of the tools it drives.
"""

import os

__version__ = "0.1.0"

# Telemetry off by default for every tool we drive (a user may still opt in by
# setting these variables before importing reclora).
for _k, _v in {
    "FEAST_USAGE": "False",
    "GX_ANALYTICS_ENABLED": "False",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)
