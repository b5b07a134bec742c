"""engine.compile: the trained networks' calls go through torch.compile, in place."""

from pathlib import Path

import pytest
import torch

from vidgen.config import load_config
from vidgen.diffusion.recipe import DiffusionConfig, DiffusionRecipe
from vidgen.train.dist import DistInfo
from vidgen.train.engine import Trainer

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["engine.batch=4", "engine.device=cpu", "data.resolution=8", "model.img_resolution=8"]

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def trainer(*extra):
    cfg = load_config(DiffusionConfig, ROOT / "configs/diffusion/tiny.yaml", [*SMALL, *extra])
    return Trainer(DiffusionRecipe, cfg, DistInfo(device=torch.device("cpu")))


def test_compile_wraps_the_trained_networks_in_place():
    eager, compiled = trainer(), trainer("engine.compile=true")
    for name, net in compiled.nets.items():
        assert net._compiled_call_impl is not None, name
        assert compiled.recipe.networks()[name] is net  # the recipe calls the compiled module
        # parameter names (hence checkpoints) as without compile
        assert list(net.state_dict()) == list(eager.nets[name].state_dict())
        assert eager.nets[name]._compiled_call_impl is None
    for ema in compiled.emas.values():  # EMA copies are evaluated, not trained: left eager
        for copy in ema.copies().values():
            assert all(m._compiled_call_impl is None for m in copy.modules())


@pytest.mark.slow
def test_compiled_steps_train_like_eager_ones():
    g = torch.Generator().manual_seed(0)
    batch = {"x": torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, "label": torch.zeros(4, dtype=torch.long)}
    params = {}
    for mode, extra in (("eager", ()), ("compiled", ("engine.compile=true",))):
        tr = trainer(*extra)
        torch.manual_seed(1)  # the same noise levels and noise in both runs
        for _ in range(3):
            tr.train_step(batch)
        params[mode] = torch.cat([p.detach().flatten() for n in tr.nets.values() for p in n.parameters()])
    start = torch.cat([p.detach().flatten() for n in trainer().nets.values() for p in n.parameters()])
    assert not torch.allclose(params["eager"], start)  # three steps moved the weights
    assert torch.allclose(params["eager"], params["compiled"], rtol=1e-3, atol=1e-5)
