import os

# Must happen before anything imports huggingface_hub: tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# No persistent feature cache across test runs (tests that want one pass a FeatureCache on a tmp folder).
os.environ.setdefault("ICREWARD_FEATURE_CACHE", "0")
# Caches the library writes on first use (dlib's converted weights, built samples) go to a folder of this session.
if not os.environ.get("ICREWARD_CACHE"):
    import atexit
    import shutil
    import tempfile

    os.environ["ICREWARD_CACHE"] = tempfile.mkdtemp(prefix="icreward-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ICREWARD_CACHE"], ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: the suite runs tiny models, where a second OpenMP thread costs more than it gains.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
