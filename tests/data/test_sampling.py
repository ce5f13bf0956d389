"""Samplers and datasets behind resumable training and exact DDP evaluation."""

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from diffx.data.postfilter import FeaturePair, RandomSegments
from diffx.data.sampling import EpochSampler, EvalSampler, ResumableDataModule
from diffx.data.style_transfer import CropPairs
from diffx.data.timbre_transfer import RandomClips, Track


def test_eval_shares_cover_every_item_once():
    for items in (1, 2, 5, 6, 7):
        for world in range(1, min(items, 4) + 1):  # more: refused (below)
            samplers = [EvalSampler(range(items), num_replicas=world, rank=r) for r in range(world)]
            shares = [list(sampler) for sampler in samplers]
            assert sorted(i for share in shares for i in share) == list(range(items))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
            assert [len(sampler) for sampler in samplers] == [len(share) for share in shares]


def test_eval_sets_smaller_than_the_process_group_are_refused():
    with pytest.raises(ValueError, match="1 item.*2 DDP processes"):
        EvalSampler(range(1), num_replicas=2, rank=1)
    assert list(EvalSampler(range(0), num_replicas=2, rank=1)) == []  # no evaluation at all


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_order_is_distributed_samplers_and_resumes_part_way(world):
    data = range(23)
    for rank in range(world):
        sampler = EpochSampler(data, seed=7, drop_last=True, num_replicas=world, rank=rank)
        reference = DistributedSampler(
            data, num_replicas=world, rank=rank, shuffle=True, seed=7, drop_last=True
        )
        for epoch in (0, 3):
            sampler.set_epoch(epoch)
            reference.set_epoch(epoch)
            assert list(sampler) == list(reference)
        full = list(sampler)  # epoch 3
        sampler.resume(3, 4)
        assert list(sampler) == full[4:]
        assert list(sampler) == full  # the skip was for one iteration only
        sampler.resume(3, 4)
        sampler.set_epoch(4)  # a new epoch starts from its beginning
        reference.set_epoch(4)
        assert list(sampler) == list(reference)


def test_epoch_sampler_passes_the_epoch_to_the_dataset():
    class Draws(torch.utils.data.Dataset):
        epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return 4

    data = Draws()
    EpochSampler(data, num_replicas=1, rank=0).resume(5, 2)
    assert data.epoch == 5


def test_data_module_resumes_the_loader_where_the_checkpoint_was():
    module = ResumableDataModule()
    module.load_state_dict({"train_epoch": 2, "train_batches": 3})
    loader = module.train_loader(range(40), 4, seed=1)
    order = [int(i) for batch in loader for i in batch]
    reference = EpochSampler(range(40), seed=1, num_replicas=1, rank=0)
    reference.set_epoch(2)
    full = list(reference)
    assert order == full[12:]
    # a loader iterator draws its base seed from the loader's generator, not the global one
    state = torch.get_rng_state()
    iter(loader)
    assert torch.equal(torch.get_rng_state(), state)


def _draws(dataset, epoch):
    dataset.set_epoch(epoch)
    return [dataset[i] for i in range(len(dataset))]


def _same(a, b):
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_random_training_items_depend_on_seed_epoch_and_index_only():
    clips = [("a", torch.randn(1, 5000)), ("b", torch.randn(1, 3000))]
    rng = np.random.default_rng(0)
    pairs = [FeaturePair(f"u{i}", rng.normal(size=(n, 3)), rng.normal(size=(n, 3))) for i, n in
             enumerate((40, 90))]  # fmt: skip
    tracks = [Track("t", np.arange(300 * 4, dtype=np.float32), np.full(300, 440.0),
                    np.ones(300), np.zeros(300))]  # fmt: skip
    for make in (
        lambda seed: CropPairs(clips, 1000, 3, 6, seed=seed),
        lambda seed: RandomSegments(pairs, 32, 6, seed=seed),
        lambda seed: RandomClips(tracks, 50, 4, 6, seed=seed),
    ):
        first = _draws(make(0), 1)
        torch.manual_seed(123)  # the global generator plays no part
        assert _same(_draws(make(0), 1), first)
        assert not _same(_draws(make(0), 2), first)
        assert not _same(_draws(make(1), 1), first)
