import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("KDAD_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def lite0_random():
    from kdad.experts import build_expert
    return build_expert("efficientnet_lite0_random")
