"""The memory accountant: its counting checked against hand-computed bytes, LoRA counts against peft, and one
full-size accounting on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from icreward.memory.accountant import (
    GIB,
    estimate_recipe_memory,
    format_estimate,
    fused_attention_accounting,
    load_recipe,
    lora_parameter_count,
    main,
    measure_saved_activations,
)

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"


def _mlp_blocks(dims: int, n: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        *[nn.Sequential(nn.Linear(dims, 2 * dims), nn.ReLU(), nn.Linear(2 * dims, dims)) for _ in range(n)]
    )


def test_saved_bytes_of_linear_stack_match_hand_count():
    batch, d, n = 3, 8, 3
    model = _mlp_blocks(d, n)
    x = torch.randn(batch, d)
    acts = measure_saved_activations(lambda: model(x), model, blocks=list(model), call_inputs=[x])
    # Per block, autograd keeps the block input (for the first weight's gradient) and the ReLU output (for ReLU and
    # the second weight's gradient); weights are parameters and are excluded. fp32 = 4 bytes.
    block_input, relu_out = batch * d * 4, batch * 2 * d * 4
    assert acts.total == n * (block_input + relu_out)
    assert acts.block_inputs == n * block_input
    assert acts.block_internal == [relu_out] * n
    # per-block checkpointing keeps every block's input and recomputes one block at a time
    assert acts.block_checkpointed == n * block_input + relu_out
    assert acts.call_inputs == block_input
    assert acts.outside_blocks == 0


def test_views_of_one_storage_are_counted_once():
    w = nn.Parameter(torch.randn(4, 4))
    x = torch.randn(6, 4)

    def fn():
        h = x @ w  # saves x
        return (h * h).sum() + (x[:3] @ w).sum()  # h saved once (twice referenced), x[:3] is a view of x

    acts = measure_saved_activations(fn, nn.ParameterList([w]))
    assert acts.total == x.numel() * 4 + 6 * 4 * 4


def test_fused_attention_saves_qkv_out_lse_and_has_exact_gradients():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, requires_grad=True) for _ in range(3))
    holder = nn.Module()
    acts = measure_saved_activations(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), holder)
    assert acts.total == 4 * (2 * 3 * 5 * 4 * 4) + 2 * 3 * 5 * 4  # q, k, v, out in fp32 + fp32 log-sum-exp
    with fused_attention_accounting():
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    ref_out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    ref = torch.autograd.grad(ref_out.square().sum(), (q, k, v))
    torch.testing.assert_close(out, ref_out)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r)
    assert torch.nn.functional.scaled_dot_product_attention.__name__ == "scaled_dot_product_attention"


@pytest.mark.parametrize("family", ["wan2.1", "cogvideox"])
def test_lora_count_matches_peft(family):
    from peft import LoraConfig, inject_adapter_in_model

    from icreward.testing.tiny_pipelines import tiny_cogvideox_i2v_pipeline, tiny_wan_i2v_pipeline

    pipe = tiny_wan_i2v_pipeline() if family == "wan2.1" else tiny_cogvideox_i2v_pipeline()
    model = pipe.transformer.requires_grad_(False)
    targets = ["to_q", "to_k", "to_v", "to_out.0"] + (["add_k_proj", "add_v_proj"] if family == "wan2.1" else [])
    expected = lora_parameter_count(model, targets, 4)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=targets), model)
    assert expected == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0


def test_full_size_dpo_wan21_accounting_on_meta(capsys):
    from icreward.adapters.published_configs import build_meta_components

    recipe = load_recipe(CONFIGS / "dpo_wan21_i2v_480p.yaml")
    est = estimate_recipe_memory(recipe, source="dpo_wan21")
    (transformer,) = build_meta_components(recipe["model_name_or_path"], components=("transformer",)).values()
    params = sum(p.numel() for p in transformer.parameters())
    assert est.rows["weights"] == pytest.approx(params * 2 / GIB)  # bf16 as the recipe says
    # LoRA on every attention projection of the 40 blocks, fp32; AdamW keeps two moments
    assert est.rows["optimizer"] == pytest.approx(2 * est.rows["trainable"]) and est.rows["trainable"] > 0
    assert est.latent_shape == (1, 16, 21, 60, 104)
    with_block = est.activations_variants["with per-block checkpointing"]
    without = est.activations_variants["without per-block checkpointing"]
    assert 0 < with_block < without / 5
    assert est.rows["activations"] == pytest.approx(with_block)  # the DPO trainer enables block checkpointing
    parts = ("weights", "trainable", "grads", "optimizer", "activations")
    assert est.rows["peak"] == pytest.approx(sum(est.rows[k] for k in parts))
    forced_off = estimate_recipe_memory(recipe, block_checkpointing=False)
    assert forced_off.rows["activations"] == pytest.approx(without)


def test_reward_feedback_reports_vae_decode_as_not_counted(tmp_path):
    # the real IPRO recipe at a tiny size so that this stays fast; the phase left out must be printed, never 0
    recipe = load_recipe(
        CONFIGS / "reward_feedback_wan22_ipro.yaml", ["num_frames=5", "height=64", "width=64", "lora_r=4"]
    )
    assert recipe["num_frames"] == 5 and recipe["lora_r"] == 4
    est = estimate_recipe_memory(recipe, source="ipro")
    assert est.rows["vae_decode"] is None
    text = format_estimate(est)
    (row,) = [line for line in text.splitlines() if line.startswith("vae_decode")]
    assert row.split() == ["vae_decode", "not", "counted"]
    k = recipe["truncated_backprop_steps"]
    assert f"K={k}" in text


def test_bad_inputs_name_the_field(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("model_name_or_path: Wan-AI/Wan2.1-I2V-14B-480P-Diffusers\nloss_type: dpo\nlora_r: 4\n")
    with pytest.raises(ValueError, match="num_frames"):
        estimate_recipe_memory(load_recipe(bad), source=str(bad))
    with pytest.raises(ValueError, match="key=value"):
        load_recipe(bad, ["num_frames"])
    with pytest.raises(FileNotFoundError):
        main(["--config", str(tmp_path / "missing.yaml")])


def test_block_partition_agrees_with_a_real_checkpointed_forward():
    # With diffusers' own (non-reentrant) per-block checkpointing, only what is saved outside the blocks reaches the
    # outer hooks; that must equal the accountant's "outside" part measured on the plain forward.
    from peft import LoraConfig, inject_adapter_in_model

    from icreward.testing.tiny_pipelines import tiny_wan_i2v_pipeline

    model = tiny_wan_i2v_pipeline().transformer.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"]), model)
    torch.manual_seed(0)
    kwargs = dict(
        hidden_states=torch.randn(1, 36, 3, 8, 8),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 512, model.config.text_dim),
        encoder_hidden_states_image=torch.randn(1, 257, model.config.image_dim),
        return_dict=False,
    )
    plain = measure_saved_activations(lambda: model(**kwargs), model, blocks=model.blocks)
    model.enable_gradient_checkpointing()
    model.train()
    checkpointed = measure_saved_activations(lambda: model(**kwargs), model)
    assert plain.outside_blocks > 0 and plain.block_internal[0] > 0
    kept = plain.block_checkpointed - max(plain.block_internal)  # outside the blocks + every block's inputs
    # The checkpoint keeps every block input alive for recomputation, but the rotary cos/sin (no grad) are held by
    # its closure rather than saved through autograd, so the outer hooks do not see them.
    rotary = sum(t.untyped_storage().nbytes() for t in model.rope(kwargs["hidden_states"]))
    assert checkpointed.total == kept - rotary
    assert plain.total > kept


def test_grpo_recipe_accounts_one_guided_piece_like_a_dpo_pair():
    # GRPO backpropagates one trained transition per piece of backward_chunk_size videos, doubled by CFG; with one
    # video under guidance that is the same batch-2 forward as one DPO pair (chosen + rejected) on the same model.
    size = ["num_frames=5", "height=64", "width=64", "lora_r=4", "lora_target_modules=[to_q, to_k, to_v, to_out.0]"]
    grpo = load_recipe(CONFIGS / "grpo_wan21_i2v_480p.yaml", [*size, "backward_chunk_size=1", "guidance_scale=5.0"])
    dpo = load_recipe(CONFIGS / "dpo_wan21_i2v_480p.yaml", [*size, "per_device_train_batch_size=1"])
    grpo_est = estimate_recipe_memory(grpo, source="grpo")
    dpo_est = estimate_recipe_memory(dpo, source="dpo")
    assert grpo_est.trainer == "grpo" and dpo_est.trainer == "dpo"
    assert grpo_est.activations_variants == pytest.approx(dpo_est.activations_variants)
    unguided = estimate_recipe_memory({**grpo, "guidance_scale": 1.0}, source="grpo")
    without = "without per-block checkpointing"
    assert unguided.activations_variants[without] < grpo_est.activations_variants[without]
    assert "GRPO" in format_estimate(grpo_est)
