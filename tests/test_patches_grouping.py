import numpy as np
import torch

from mini_decoders.tokenizers.patches import group_into_patches


def test_patches_keep_every_count_and_mask_padding():
    counts = np.random.default_rng(0).poisson(1.0, (4, 10, 70))
    patches, mask = group_into_patches(counts, 32)
    assert patches.shape == (4, 10, 3, 32) and mask.sum() == 70
    np.testing.assert_array_equal(patches.reshape(4, 10, -1)[..., :70], counts)
    assert patches[..., ~mask].sum() == 0  # padded neurons never carry spikes
    torch_patches, torch_mask = group_into_patches(torch.as_tensor(counts), 32)
    np.testing.assert_array_equal(torch_patches.numpy(), patches)
    np.testing.assert_array_equal(torch_mask.numpy(), mask)
