"""Suite-wide settings: nothing in the tests may reach a model or dataset hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# dtype=auto is bf16 on a CPU with AMX/AVX512-BF16 (issue 22): the suite keeps auto at fp32 on
# every host so a result does not depend on the CPU it ran on (child processes inherit it);
# tests of the bf16 path set dtype="bf16" or unset this themselves.
os.environ.setdefault("TUNELOOP_CPU_BF16", "0")
# Keep tests away from the user's real workspace.
os.environ.pop("TUNELOOP_HOME", None)
