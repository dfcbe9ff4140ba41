"""The loss library: every loss against values worked out by hand (with masks and ties), and the
contract every loss shares (masked slots take part in nothing, reduction, gradients, shapes)."""
import math
import re

import pytest
import torch

from irdistill.errors import IrdistillError
from irdistill.losses import LOSSES, REGULARIZERS, get_loss, get_regularizer

T, F = True, False
NAMES = sorted(LOSSES)


def softplus(x):
    return math.log1p(math.exp(x))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def value(name, scores, targets, mask=None, **params):
    s = torch.tensor(scores, dtype=torch.float64)
    t = torch.tensor(targets, dtype=torch.float64)
    m = None if mask is None else torch.tensor(mask)
    return LOSSES[name](s, t, m, **params).item()


def test_registries_hold_exactly_the_library():
    assert set(LOSSES) == {"bce", "mse", "hinge", "ranknet", "margin_mse", "infonce", "kl",
                           "adr_mse", "listnet", "approx_ndcg", "lambdaloss"}
    assert set(REGULARIZERS) == {"flops", "l1"}
    for name in LOSSES:
        doc = LOSSES[name].__doc__
        assert doc and re.search(r"(19|20)\d\d", doc), name  # every docstring cites its paper


def test_unknown_names_give_a_hint():
    with pytest.raises(IrdistillError, match="did you mean 'ranknet'"):
        get_loss("rank_net")
    with pytest.raises(IrdistillError, match="sparse regulariser"):
        get_loss("flops")
    with pytest.raises(IrdistillError, match="unknown regularizer"):
        get_regularizer("l3")
    assert get_regularizer("flops") is REGULARIZERS["flops"]


# ---- values worked out by hand ---------------------------------------------------------------

def test_bce_by_hand():
    # graded label 2 counts as relevant; the padded slot and the all-padded query count nothing
    got = value("bce", [[2.0, -1.0, 0.5], [9.0, 9.0, 9.0]], [[2, 0, 1], [1, 1, 1]],
                [[T, T, F], [F, F, F]])
    assert got == pytest.approx((softplus(-2.0) + softplus(-1.0)) / 2)


def test_mse_by_hand():
    got = value("mse", [[1.0, 2.0], [0.0, 5.0]], [[0.0, 4.0], [3.0, 0.0]], [[T, T], [T, F]])
    assert got == pytest.approx(((1 + 4) / 2 + 9) / 2)


def test_hinge_by_hand_ties_make_no_pair():
    # t = [2, 1, 1]: pairs (0,1) and (0,2); the tie 1 = 1 is no pair
    q1 = (max(0, 1 - (0.5 - 1.0)) + max(0, 1 - (0.5 - 0.2))) / 2
    # second query: slot 2 padded, so only the pair (1, 0)
    q2 = max(0, 1 - (3.0 - 0.0))
    got = value("hinge", [[0.5, 1.0, 0.2], [0.0, 3.0, -7.0]], [[2, 1, 1], [0, 1, 5]],
                [[T, T, T], [T, T, F]])
    assert got == pytest.approx((q1 + q2) / 2)
    assert value("hinge", [[0.0, 0.0]], [[1, 0]], margin=0.5) == pytest.approx(0.5)


def test_ranknet_by_hand():
    q1 = (softplus(-(0.5 - 1.0)) + softplus(-(0.5 - 0.2))) / 2
    got = value("ranknet", [[0.5, 1.0, 0.2], [1.0, 1.0, 1.0]], [[2, 1, 1], [3, 3, 3]])
    assert got == pytest.approx(q1)  # the second query (all tied) has no pair: not averaged in


def test_margin_mse_by_hand():
    # query 1: slot 2 padded -> one term ((3-1) - (5-1))^2 = 4; query 2: positive padded -> none
    got = value("margin_mse", [[3.0, 1.0, 2.0], [1.0, 2.0, 3.0]], [[5, 1, 4], [1, 1, 1]],
                [[T, T, F], [F, T, T]])
    assert got == pytest.approx(4.0)
    got = value("margin_mse", [[3.0, 1.0, 2.0]], [[5, 1, 4]])
    assert got == pytest.approx((((3 - 1) - (5 - 1)) ** 2 + ((3 - 2) - (5 - 4)) ** 2) / 2)


def test_infonce_by_hand():
    got = value("infonce", [[1.0, 2.0, 3.0]], [[1, 0, 0]], [[T, T, F]])
    assert got == pytest.approx(-math.log(math.e / (math.e + math.e ** 2)))
    got = value("infonce", [[1.0, 2.0, 3.0]], [[1, 0, 0]], temperature=0.5)
    z = sum(math.exp(x / 0.5) for x in (1, 2, 3))
    assert got == pytest.approx(-math.log(math.exp(2) / z))


def _softmax(xs):
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


def test_kl_and_listnet_by_hand():
    s, t = [1.0, 0.0, 0.3], [0.0, 2.0, 1.0]
    p, q = _softmax(t[:2]), _softmax(s[:2])  # slot 2 padded
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    ce = -sum(pi * math.log(qi) for pi, qi in zip(p, q))
    mask = [[T, T, F], [F, F, F]]
    assert value("kl", [s, s], [t, t], mask) == pytest.approx(kl)
    assert value("listnet", [s, s], [t, t], mask) == pytest.approx(ce)
    p2, q2 = _softmax([x / 2 for x in t]), _softmax([x / 2 for x in s])
    kl2 = sum(pi * math.log(pi / qi) for pi, qi in zip(p2, q2))
    assert value("kl", [s], [t], temperature=2.0) == pytest.approx(kl2)
    assert value("kl", [s], [[x + 5 for x in s]]) == pytest.approx(0.0, abs=1e-12)


def test_adr_mse_by_hand_with_ties():
    s, t = [0.0, 1.0, 2.0], [3.0, 3.0, 1.0]
    approx = [1 + sigmoid(1) + sigmoid(2), 1 + sigmoid(-1) + sigmoid(1),
              1 + sigmoid(-2) + sigmoid(-1)]
    ranks = [1, 1, 3]  # 1 + #{j: t_j > t_i}: the tied pair shares rank 1
    expected = sum((a - r) ** 2 / math.log2(r + 1) for a, r in zip(approx, ranks)) / 3
    assert value("adr_mse", [s], [t]) == pytest.approx(expected)
    avg = [1.5, 1.5, 3]
    expected = sum((a - r) ** 2 / math.log2(r + 1) for a, r in zip(approx, avg)) / 3
    assert value("adr_mse", [s], [t], ties="average") == pytest.approx(expected)
    # a padded slot is neither ranked nor counted in anyone's approximate rank
    approx = [1 + sigmoid(1), 1 + sigmoid(-1)]
    expected = ((approx[0] - 2) ** 2 / math.log2(3) + (approx[1] - 1) ** 2 / 1) / 2
    assert value("adr_mse", [[0.0, 1.0, 9.0]], [[1, 2, 3]], [[T, T, F]]) == pytest.approx(expected)


def test_approx_ndcg_by_hand():
    s, t = [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]
    ranks = [1 + sigmoid(1) + sigmoid(2), 1 + sigmoid(-1) + sigmoid(1),
             1 + sigmoid(-2) + sigmoid(-1)]
    gains = [3.0, 0.0, 1.0]
    idcg = 3.0 / math.log2(2) + 1.0 / math.log2(3)
    dcg = sum(g / math.log2(1 + r) for g, r in zip(gains, ranks))
    # the second query has no gain at all: no term
    got = value("approx_ndcg", [s, s], [t, [0, 0, 0]])
    assert got == pytest.approx(1 - dcg / idcg)
    lin_idcg = 2.0 + 1.0 / math.log2(3)
    lin = sum(g / math.log2(1 + r) for g, r in zip([2.0, 0.0, 1.0], ranks))
    assert value("approx_ndcg", [s], [t], scale_gains=False) == pytest.approx(1 - lin / lin_idcg)


def test_lambdaloss_by_hand():
    # model order: slot 1 (pos 1), slot 0 (pos 2), slot 2 (pos 3); slot 3 is padded
    s, t = [0.2, 1.0, -0.5, 5.0], [2.0, 0.0, 1.0, 9.0]
    pos = {0: 2, 1: 1, 2: 3}
    gains = {0: 3.0, 1: 0.0, 2: 1.0}
    max_dcg = 3.0 + 1.0 / math.log2(3)

    def inv_d(p):
        return 1 / math.log2(1 + p)

    def term(i, j, mu=10.0):
        gap = abs(pos[i] - pos[j])
        w = (abs(inv_d(pos[i]) - inv_d(pos[j])) + mu * abs(inv_d(gap) - inv_d(gap + 1))) \
            * abs(gains[i] - gains[j]) / max_dcg
        return w * math.log2(1 + math.exp(-(s[i] - s[j])))

    pairs = [(0, 1), (0, 2), (2, 1)]
    expected = sum(term(i, j) for i, j in pairs) / 3
    assert value("lambdaloss", [s], [t], [[T, T, T, F]]) == pytest.approx(expected)
    expected = sum(term(i, j, mu=0.0) for i, j in pairs) / 3  # mu=0: plain LambdaRank weights
    assert value("lambdaloss", [s], [t], [[T, T, T, F]], mu=0.0) == pytest.approx(expected)


def test_flops_and_l1_by_hand():
    reps = torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0], [100.0, 100.0, 100.0]])
    mask = torch.tensor([T, T, F])
    mean_abs = [2.0, 0.5, 1.0]
    assert REGULARIZERS["flops"](reps, mask).item() == pytest.approx(sum(m * m for m in mean_abs))
    assert REGULARIZERS["l1"](reps, mask).item() == pytest.approx((3.0 + 4.0) / 2)
    assert REGULARIZERS["l1"](reps[:2]).item() == pytest.approx(3.5)
    none = torch.ones(2, 3, requires_grad=True)
    out = REGULARIZERS["flops"](none, torch.tensor([F, F]))
    out.backward()
    assert out.item() == 0.0 and torch.equal(none.grad, torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"\[batch, vocab\]"):
        REGULARIZERS["flops"](torch.ones(3))


# ---- the contract, for every loss ------------------------------------------------------------

def _batch(seed=0, queries=3, width=5):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(queries, width, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 4, (queries, width), generator=g).to(torch.float64)
    targets[:, 0] = 4.0  # slot 0 is the best (the positive of infonce / margin_mse)
    mask = torch.ones(queries, width, dtype=torch.bool)
    mask[0, 3:] = False
    mask[1, 4] = False
    return scores, targets, mask


@pytest.mark.parametrize("name", NAMES)
def test_masked_slots_change_nothing(name):
    scores, targets, mask = _batch()
    base = scores.clone().requires_grad_(True)
    loss = LOSSES[name](base, targets, mask)
    loss.backward()
    for fill in (1e4, -1e4, float("nan"), float("inf")):
        perturbed = scores.masked_fill(~mask, fill).requires_grad_(True)
        ptargets = targets.masked_fill(~mask, fill)
        other = LOSSES[name](perturbed, ptargets, mask)
        other.backward()
        assert other.item() == pytest.approx(loss.item(), rel=1e-12), fill
        assert torch.isfinite(perturbed.grad).all()
        assert torch.equal(perturbed.grad[~mask], torch.zeros_like(perturbed.grad[~mask]))
        assert torch.allclose(perturbed.grad, base.grad)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow(name):
    scores, targets, mask = _batch(seed=1)
    scores.requires_grad_(True)
    loss = LOSSES[name](scores, targets, mask)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    assert scores.grad[mask].abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_mean_over_queries_with_terms(name):
    """A query with no term (all padded) is not averaged in; the others are averaged."""
    scores, targets, mask = _batch(seed=2)
    each = [LOSSES[name](scores[i:i + 1], targets[i:i + 1], mask[i:i + 1]).item()
            for i in range(3)]
    empty = torch.zeros(1, scores.shape[1], dtype=torch.bool)
    got = LOSSES[name](torch.cat([scores, scores[:1]]), torch.cat([targets, targets[:1]]),
                       torch.cat([mask, empty])).item()
    assert got == pytest.approx(sum(each) / 3, rel=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_no_term_at_all_is_zero_with_a_graph(name):
    scores = torch.randn(2, 3, requires_grad=True)
    loss = LOSSES[name](scores, torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(scores.grad, torch.zeros(2, 3))


@pytest.mark.parametrize("name", NAMES)
def test_mask_none_means_all_real_and_shapes_are_checked(name):
    scores, targets, _ = _batch(seed=3)
    full = torch.ones_like(scores, dtype=torch.bool)
    assert LOSSES[name](scores, targets).item() == pytest.approx(
        LOSSES[name](scores, targets, full).item())
    with pytest.raises(ValueError, match="targets shape"):
        LOSSES[name](scores, targets[:, :2])
    with pytest.raises(ValueError, match=r"\[queries, list_size\]"):
        LOSSES[name](scores[0], targets[0])


@pytest.mark.parametrize("name", ["hinge", "ranknet", "lambdaloss"])
def test_pairwise_losses_ignore_tied_targets(name):
    scores = torch.tensor([[3.0, -2.0, 0.5]], requires_grad=True)
    loss = LOSSES[name](scores, torch.tensor([[1.0, 1.0, 1.0]]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(scores.grad, torch.zeros(1, 3))


@pytest.mark.parametrize("name", ["hinge", "ranknet", "lambdaloss", "adr_mse", "approx_ndcg",
                                  "listnet", "kl", "infonce", "bce", "margin_mse"])
def test_better_order_lowers_the_loss(name):
    """Scores in the targets' order give a lower loss than the reverse order."""
    targets = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    good = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert LOSSES[name](good, targets).item() < LOSSES[name](good.flip(1), targets).item()


def test_loss_params_are_checked():
    from irdistill.losses import check_loss_params, loss_parameters

    assert loss_parameters("lambdaloss") == {"mu": 10.0, "sigma": 1.0}
    assert loss_parameters("bce") == {}
    check_loss_params("infonce", {"temperature": 0.05})
    with pytest.raises(IrdistillError, match="did you mean 'temperature'"):
        check_loss_params("kl", {"temprature": 2})
    with pytest.raises(IrdistillError, match="takes no parameters"):
        check_loss_params("ranknet", {"sigma": 2})
