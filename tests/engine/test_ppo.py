"""PPO: the math against hand-computed values, then a few real rollouts on a tiny random Llama
(hidden 64, 2 layers, demo tokenizer) with a token-level reward it can learn in seconds;
cancel + resume continue the rollout count."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from tuiapp.engine import ppo  # noqa: E402

T = torch.tensor


# ------------------------------------------------------------------ math, by hand


def test_kl_penalized_rewards_put_the_score_on_the_last_real_token():
    logp = T([[-1.0, -2.0, -0.5], [-1.0, -1.0, -9.0]])
    ref = T([[-1.5, -1.0, -0.5], [-0.5, -1.0, -1.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = ppo.kl_penalized_rewards(T([2.0, -1.0]), logp, ref, mask, beta=0.1)
    # kl row 0: 0.5, -1.0, 0.0 ; row 1: -0.5, 0.0, (masked)
    assert torch.allclose(kl, T([[0.5, -1.0, 0.0], [-0.5, 0.0, 0.0]]))
    # r = -0.1*kl, + score at the last real token (index 2 in row 0, index 1 in row 1)
    assert torch.allclose(rewards, T([[-0.05, 0.1, 2.0], [0.05, -1.0, 0.0]]))


def test_gae_three_steps_by_hand():
    rewards = T([[0.1, -0.2, 1.0], [0.5, 1.0, 7.0]])
    values = T([[0.5, 0.4, 0.3], [0.2, 0.6, 9.0]])
    mask = T([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = ppo.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: δ2 = 1.0 - 0.3 = 0.7 ; δ1 = -0.2 + 0.9*0.3 - 0.4 = -0.33 ; δ0 = 0.1 + 0.9*0.4 - 0.5 = -0.04
    #        A2 = 0.7 ; A1 = -0.33 + 0.72*0.7 = 0.174 ; A0 = -0.04 + 0.72*0.174 = 0.08528
    # row 1 (two real tokens; the third is padding): δ1 = 1.0 - 0.6 = 0.4 ; δ0 = 0.5 + 0.9*0.6 - 0.2 = 0.84
    #        A1 = 0.4 ; A0 = 0.84 + 0.72*0.4 = 1.128
    assert torch.allclose(adv, T([[0.08528, 0.174, 0.7], [1.128, 0.4, 0.0]]), atol=1e-6)
    assert torch.allclose(ret, T([[0.58528, 0.574, 1.0], [1.328, 1.0, 0.0]]), atol=1e-6)


def test_gae_with_lambda_one_and_gamma_one_is_reward_to_go_minus_value():
    rewards = T([[1.0, 2.0, 3.0]])
    values = T([[0.5, 0.5, 0.5]])
    adv, ret = ppo.gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert torch.allclose(ret, T([[6.0, 5.0, 3.0]]))
    assert torch.allclose(adv, T([[5.5, 4.5, 2.5]]))


def test_whiten_uses_only_unmasked_entries():
    x = T([[1.0, 2.0, 3.0, 100.0]])
    mask = T([[1.0, 1.0, 1.0, 0.0]])
    out = ppo.whiten(x, mask)
    s = math.sqrt(2.0 / 3.0)  # population std of 1, 2, 3
    assert torch.allclose(out, T([[-1.0 / s, 0.0, 1.0 / s, 0.0]]), atol=1e-5)


def test_clipped_policy_loss_inside_and_outside_the_clip():
    old = torch.zeros(1, 4)
    # ratios 1.1 (inside), 1.5 with A>0 (clipped to 1.2), 0.5 with A<0 (clipped to 0.8),
    # 1.5 with A<0 (the unclipped term is the larger loss: no clipping applies)
    logp = torch.log(T([[1.1, 1.5, 0.5, 1.5]]))
    adv = T([[1.0, 1.0, -1.0, -1.0]])
    loss, clipfrac = ppo.clipped_policy_loss(logp, old, adv, torch.ones(1, 4), clip=0.2)
    per_token = [-1.1, -1.2, 0.8, 1.5]
    assert loss.item() == pytest.approx(sum(per_token) / 4, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.5)
    # a masked token changes nothing
    loss2, _ = ppo.clipped_policy_loss(torch.log(T([[1.1, 9.0]])), torch.zeros(1, 2), T([[1.0, 5.0]]),
                                       T([[1.0, 0.0]]), clip=0.2)
    assert loss2.item() == pytest.approx(-1.1, abs=1e-6)


def test_clipped_value_loss_by_hand():
    values = T([[1.0, 0.0, 0.9]])
    old = T([[0.5, 0.5, 0.5]])
    returns = T([[0.0, 1.0, 1.0]])
    loss, clipfrac = ppo.clipped_value_loss(values, old, returns, torch.ones(1, 3), clip=0.2)
    # token 0: (1-0)^2 = 1 vs clipped 0.7 -> 0.49 : 1.0 ; token 1: 1 vs clipped 0.3 -> 0.49 : 1.0
    # token 2: 0.01 vs clipped 0.7 -> 0.09 : 0.09 (the clipped error is used)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 1.0 + 0.09) / 3, abs=1e-6)
    assert clipfrac.item() == pytest.approx(1 / 3)


def test_adaptive_kl_moves_beta_towards_the_target():
    ctl = ppo.AdaptiveKL(0.1, target=1.0, horizon=100)
    assert ctl.update(3.0, n_answers=10) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # error capped at +0.2
    high = ctl.beta
    assert ctl.update(0.9, n_answers=10) == pytest.approx(high * (1 - 0.1 * 0.1))
    assert ctl.update(1.0, 10) == pytest.approx(ctl.beta)  # on target: unchanged
