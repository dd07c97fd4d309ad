"""The launcher refuses an environment whose server would corrupt string inputs."""

import pytest

from kontext_triton.server.install import TritonNotFound, refuse_numpy_2


def test_numpy_2_is_refused_with_the_fix_named():
    with pytest.raises(TritonNotFound, match=r"numpy 2\.1\.0 .*numpy<2"):
        refuse_numpy_2("2.1.0")


def test_numpy_1_passes():
    refuse_numpy_2("1.26.4")
