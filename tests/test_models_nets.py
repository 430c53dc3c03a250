"""GIM and FEDN: shapes, anchors against hand-computed tables, offsets -> intervals, torch.export, config errors."""
import math

import pytest
import torch

from fes_live.models.anchors import Anchors, offsets_to_intervals
from fes_live.models.backbones import ResNet18Encoder
from fes_live.models.fedn import FEDN, FEDNConfig
from fes_live.models.gim import GIM, GIMConfig
from fes_live.stream.config import ConfigError, from_dict, to_dict

torch.set_num_threads(1)
SMALL_GIM = GIMConfig(dim=16, heads=2, dim_head=8, mlp_dim=32)
SMALL_FEDN = FEDNConfig(window=64, num_classes=3, backbone_hidden=32, backbone_dim=16, dim=16, heads=2, head_dim=16)


def test_anchor_tables_hand_computed():
    a = Anchors(window=16, strides=(4, 8), lengths=(8.0, 16.0), ratios=(0.5, 1.0, 2.0),
                regress_ranges=((1, 8), (6, 100)))
    assert len(a) == 4 * 4 + 2 * 4  # positions x (1 free + 3 anchors)
    # level 0, position 1 (frames 4..7): centre 5.5; anchors of length 4, 8, 16
    i = 1 * 4
    assert a.centres[i].item() == 5.5 and bool(a.anchor_free[i])
    assert a.reference[i].tolist() == [5.5, 5.5]
    assert a.reference[i + 1].tolist() == [4.0, 7.0]
    assert a.reference[i + 2].tolist() == [2.0, 9.0]
    assert a.reference[i + 3].tolist() == [-2.0, 13.0]
    # level 1, position 0 (frames 0..7): centre 3.5, length-16 anchor
    j = 16
    assert a.strides[j].item() == 8 and a.level[j].item() == 1
    assert a.reference[j + 2].tolist() == [-4.0, 11.0]
    assert a.regress_range[j].tolist() == [6.0, 100.0]
    assert "centres" not in a.state_dict()  # non-persistent


def test_offsets_to_intervals_hand_computed():
    centres = torch.tensor([5.5, 5.5])
    strides = torch.tensor([4.0, 4.0])
    lengths = torch.tensor([0.0, 8.0])
    free = torch.tensor([True, False])
    off = torch.tensor([[[0.0, 0.0], [0.5, math.log(2)]]])
    iv = offsets_to_intervals(off, centres, strides, lengths, free)[0]
    # free: 5.5 -/+ 4 * softplus(0) = 4 ln 2
    assert iv[0].tolist() == pytest.approx([5.5 - 4 * math.log(2), 5.5 + 4 * math.log(2)])
    # anchored: centre 5.5 + 0.5 * 8 = 9.5, length 16 -> [2, 17]
    assert iv[1].tolist() == pytest.approx([2.0, 17.0])


def test_gim_shapes_and_export():
    m = GIM(SMALL_GIM).eval()
    x = torch.randn(5, 17, 12, 2)
    with torch.no_grad():
        out = m(x)
    assert out.intensity.shape == (5,) and out.apex_logits.shape == (5, 2)
    assert out.feature.shape == (5, 16) and out.embed.shape == (5, 16)
    assert float(out.intensity.min()) >= 0 and float(out.intensity.max()) <= 1
    # the nose ROIs (6, 7) are not selected: changing them changes nothing
    x2 = x.clone()
    x2[:, :, 6:8] += 5
    assert torch.allclose(m(x2).intensity, out.intensity)
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    y = ep.module()(torch.randn(3, 17, 12, 2))
    assert y[0].shape == (3,)
    assert torch.allclose(ep.module()(x)[0], out.intensity, atol=1e-6)


def test_gim_batch_independent():
    """A whole video is a batch of T windows: each frame's output must not depend on the others (eval mode)."""
    m = GIM(SMALL_GIM).eval()
    x = torch.randn(6, 17, 12, 2)
    with torch.no_grad():
        full = m(x).intensity
        single = torch.cat([m(x[i:i + 1]).intensity for i in range(6)])
    assert torch.allclose(full, single, atol=1e-6)


def test_fedn_shapes_and_export():
    m = FEDN(SMALL_FEDN).eval()
    x = torch.randn(2, 64, 1008)
    out = m(x)
    positions = 64 // 4 + 64 // 8 + 64 // 16 + 64 // 32
    assert out.cls_logits.shape == (2, positions * 6, 3)
    assert out.intervals.shape == (2, positions * 6, 2) and out.offsets.shape == out.intervals.shape
    # initial objectness is the prior (0.01)
    assert torch.sigmoid(out.cls_logits).mean().item() == pytest.approx(0.01, rel=0.5)
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    got = ep.module()(x)
    assert torch.allclose(got[0], out.cls_logits, atol=1e-5) and torch.allclose(got[1], out.intervals, atol=1e-4)


def test_fedn_input_sets_mask_the_columns_they_name():
    """A masked column changes nothing FEDN says: landmarks for the blendshape sets, blinks and gaze for
    "expression", and speech's mouth movements as well for "no-speech" (a smile still counts)."""
    from fes_live.models.emotion import MEDIAPIPE_BLENDSHAPES as names
    from fes_live.models.fedn import input_mask
    col = names.index
    for inputs, masked, seen in [("expression", ["eyeBlinkLeft", "eyeLookUpRight"], ["jawOpen", "mouthSmileLeft"]),
                                 ("no-speech", ["eyeBlinkLeft", "jawOpen", "mouthFunnel", "mouthRollLower"],
                                  ["mouthSmileLeft", "browInnerUp", "mouthFrownRight"])]:
        mask = input_mask(inputs)
        assert mask[len(names):].sum() == 0 and all(mask[col(n)] == 0 for n in masked), inputs
        assert all(mask[col(n)] == 1 for n in seen), inputs
        m = FEDN(FEDNConfig(**{**to_dict(SMALL_FEDN), "inputs": inputs})).eval()
        x = torch.randn(1, 64, 1008)
        y = x.clone()
        y[..., [col(n) for n in masked]] += 1.0
        assert torch.equal(m(x).cls_logits, m(y).cls_logits), inputs


def test_fedn_trains_on_a_toy_target():
    """A few steps of BCE on one positive anchor move its score up: gradients reach every stage."""
    torch.manual_seed(0)
    m = FEDN(SMALL_FEDN)
    x = torch.randn(1, 64, 1008)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    target = torch.zeros(1, len(m.anchors), 3)
    target[0, 10, 1] = 1
    first = None
    for _ in range(20):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(m(x).cls_logits, target)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert m.backbone.fc1.weight.grad.abs().sum() > 0


def test_configs_round_trip_and_errors():
    cfg = from_dict(FEDNConfig, to_dict(SMALL_FEDN))
    assert cfg == SMALL_FEDN
    assert from_dict(GIMConfig, to_dict(SMALL_GIM)) == SMALL_GIM
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(GIMConfig, {"dims": 3})
    with pytest.raises(ValueError, match="multiple of segment"):
        FEDN(FEDNConfig(window=60))
    with pytest.raises(ValueError, match="partition"):
        GIM(GIMConfig(groups=((0, 1), (2, 3))))
    with pytest.raises(ValueError, match="unknown FEDN backbone"):
        FEDN(FEDNConfig(backbone="vgg"))


def test_resnet18_needs_torchvision():
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(RuntimeError, match="optional extra"):
            ResNet18Encoder()
    else:
        pytest.skip("torchvision is installed here")


def test_gim_learns_moving_from_still_windows():
    """Windows whose mouth ROIs move around the centre frame get intensity 1, still ones 0: a few Adam steps
    separate them (the structure passes a signal from the flow to the intensity head)."""
    torch.manual_seed(0)
    m = GIM(SMALL_GIM)
    x = torch.randn(64, 17, 12, 2) * 0.05
    y = torch.zeros(64)
    x[:32, 6:11, 8:12] += torch.tensor([0.0, 1.0])  # mouth moves up around the centre frame
    y[:32] = 1
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(m(x).intensity, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        test = torch.randn(8, 17, 12, 2) * 0.05
        test[:4, 6:11, 8:12] += torch.tensor([0.0, 1.0])
        i = m(test).intensity
    assert i[:4].min() > i[4:].max()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_models_on_cuda_match_cpu():
    """Anchor tables are buffers, so .to('cuda') moves everything; results match the CPU ones."""
    torch.manual_seed(0)
    gim, fedn = GIM(SMALL_GIM).eval(), FEDN(SMALL_FEDN).eval()
    xg, xf = torch.randn(4, 17, 12, 2), torch.randn(1, 64, 1008)
    with torch.no_grad():
        cpu_g, cpu_f = gim(xg).intensity, fedn(xf).intervals
        gpu_g = gim.cuda()(xg.cuda()).intensity.cpu()
        gpu_f = fedn.cuda()(xf.cuda()).intervals.cpu()
    assert torch.allclose(cpu_g, gpu_g, atol=1e-4) and torch.allclose(cpu_f, gpu_f, atol=1e-3)
