"""The memory accountant: its counting checked against hand-computed bytes, LoRA counts against peft, and one
full-size accounting on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from icreward.cli.estimate_memory import main
from icreward.memory.accountant import (
    GIB,
    estimate_recipe_memory,
    format_estimate,
    fused_attention_accounting,
    load_recipe,
    lora_parameter_count,
    measure_saved_activations,
)

CONFIGS = Path(__file__).resolve().parent.parent / "examples" / "configs"


# The shipped full-size recipes, by trainer and family: each must fit one 80 GB GPU with headroom (<= 72 GiB) by the
# accounting at the published size, and state that accounted peak (as printed) in its comment.
SHIPPED_RECIPES = {
    "dpo_wan21_i2v_480p": "dpo",
    "dpo_wan22_i2v": "dpo",
    "dpo_cogvideox_i2v": "dpo",
    "grpo_wan21_i2v_480p": "grpo",
    "grpo_wan22_i2v": "grpo",
    "grpo_cogvideox_i2v": "grpo",
    "reward_feedback_wan22_ipro": "reward_feedback",
    "reward_feedback_wan21_i2v_480p": "reward_feedback",
}


@pytest.fixture(scope="module")
def shipped_estimates():
    return {
        name: estimate_recipe_memory(load_recipe(CONFIGS / f"{name}.yaml"), source=name) for name in SHIPPED_RECIPES
    }


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


def test_full_size_dpo_wan21_accounting_on_meta(shipped_estimates):
    from icreward.adapters.published_configs import build_meta_components

    recipe = load_recipe(CONFIGS / "dpo_wan21_i2v_480p.yaml")
    est = shipped_estimates["dpo_wan21_i2v_480p"]
    (transformer,) = build_meta_components(recipe["model_name_or_path"], components=("transformer",)).values()
    # bf16 as the recipe says, with the modules from_pretrained keeps in fp32
    weight_bytes = sum(p.numel() * p.element_size() for p in transformer.parameters())
    assert est.rows["weights"] == pytest.approx(weight_bytes / GIB)
    assert weight_bytes > sum(p.numel() for p in transformer.parameters()) * 2
    # LoRA on every attention projection of the 40 blocks, fp32; AdamW keeps two moments
    assert est.rows["optimizer"] == pytest.approx(2 * est.rows["trainable"]) and est.rows["trainable"] > 0
    frames = (recipe["num_frames"] - 1) // 4 + 1
    assert est.latent_shape == (1, 16, frames, recipe["height"] // 8, recipe["width"] // 8)
    with_block = est.activations_variants["with per-block checkpointing"]
    without = est.activations_variants["without per-block checkpointing"]
    assert 0 < with_block < without / 5
    assert est.rows["activations"] == pytest.approx(with_block)  # the DPO trainer enables block checkpointing
    # latents are precomputed: the encoders leave the device before training steps
    assert est.rows["encoders"] == 0
    parts = ("weights", "trainable", "grads", "optimizer", "activations")
    assert est.rows["peak"] == pytest.approx(sum(est.rows[k] for k in parts))
    forced_off = estimate_recipe_memory(recipe, block_checkpointing=False)
    assert forced_off.rows["activations"] == pytest.approx(without)


def test_block_extrapolation_equals_the_full_forward():
    # two short forwards (2 and 3 blocks) extended to 7 blocks give the bytes of the full 7-block forward
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig, inject_adapter_in_model

    from icreward.memory.accountant import measure_repeated_blocks
    from icreward.testing.tiny_pipelines import tiny_wan_transformer

    config = dict(tiny_wan_transformer(0, image_dim=4).config)
    config["num_layers"] = 7
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(config).requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_v"]), model)
    kwargs = dict(
        hidden_states=torch.empty(2, 36, 3, 16, 16, device="meta"),
        timestep=torch.empty(2, device="meta"),
        encoder_hidden_states=torch.empty(2, 512, model.config.text_dim, device="meta"),
        encoder_hidden_states_image=torch.empty(2, 257, model.config.image_dim, device="meta"),
        return_dict=False,
    )
    inputs = [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    fast = measure_repeated_blocks(lambda: model(**kwargs), model, "blocks", inputs)
    exact = measure_repeated_blocks(lambda: model(**kwargs), model, "blocks", inputs, exact=True)
    assert len(model.blocks) == 7
    assert fast == exact and fast.total > 0


def test_autocast_emulation_casts_float32_lora_inputs_like_autocast():
    # A float32 LoRA layer on a bf16 base: under autocast its input is saved as a bf16 copy, without autocast peft
    # casts the input to float32 and that copy is saved.
    from peft import LoraConfig, inject_adapter_in_model

    from icreward.memory.accountant import AutocastEmulation

    base = nn.Sequential(nn.Linear(64, 64)).to(torch.bfloat16).requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=["0"]), base)
    for p in base.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    x = torch.randn(32, 64, dtype=torch.bfloat16)
    with AutocastEmulation(torch.bfloat16):
        under = measure_saved_activations(lambda: base(x), base)
    plain = measure_saved_activations(lambda: base(x), base)
    # autocast: bf16 copies of x (for lora_A's weight gradient) and of lora_B's weight (to reach lora_A), and
    # lora_A's bf16 output (for lora_B's weight gradient)
    assert under.total == 32 * 64 * 2 + 64 * 4 * 2 + 32 * 4 * 2
    # no autocast: the fp32 copy of x and lora_A's fp32 output; the fp32 weights are parameters (not counted)
    assert plain.total == 32 * 64 * 4 + 32 * 4 * 4


def test_reward_feedback_counts_the_checkpointed_decode(tmp_path):
    # the real IPRO recipe at a tiny size so that this stays fast
    from icreward.adapters.published_configs import build_meta_components
    from icreward.memory.accountant import account_decode

    size = ["num_frames=13", "height=64", "width=64", "lora_r=4", "decode_frame_subset=3"]
    shipped = load_recipe(CONFIGS / "reward_feedback_wan22_ipro.yaml", size)
    assert shipped["offload_frozen_denoisers"] and shipped["offload_encoders"]
    recipe = {**shipped, "offload_frozen_denoisers": False, "offload_encoders": False}
    est = estimate_recipe_memory(recipe, source="ipro")
    vae = build_meta_components(recipe["model_name_or_path"], components=("vae",))["vae"]
    dec = account_decode(vae, (1, 16, 3, 8, 8), torch.bfloat16, measure_plain=True)
    assert est.rows["vae_decode"] == pytest.approx((dec.held + dec.recompute) / GIB)
    # checkpointing keeps less than the plain decode saves
    assert 0 < dec.held + dec.recompute < dec.plain
    text = format_estimate(est)
    assert "vae_decode" in text and "not counted" in text and f"K={recipe['truncated_backprop_steps']}" in text
    # the peak is the largest phase; the decode's backward holds the K calls' inputs and the decode
    assert est.peak_gib == pytest.approx(max(est.phases.values()))
    decode_phase = next(v for k, v in est.phases.items() if k.startswith("decode backward"))
    assert decode_phase > est.rows["weights"] + est.rows["vae_decode"]
    # offloading the frozen expert and the encoders takes their weights out of the training phases
    off = estimate_recipe_memory(shipped)
    assert off.rows["weights"] == pytest.approx(est.rows["weights"] / 2)
    assert off.rows["encoders"] < est.rows["encoders"] and off.peak_gib < est.peak_gib


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


def test_encoder_offload_visits_the_device_only_during_its_call():
    from icreward.memory.offload import EncoderOffload
    from icreward.testing.tiny_pipelines import tiny_wan_i2v_pipeline

    pipe = tiny_wan_i2v_pipeline()
    encoder = pipe.text_encoder.requires_grad_(False)  # the trainers freeze the pipeline first
    ids = torch.randint(0, 100, (1, 7))
    expected = encoder(ids).last_hidden_state
    moves = []
    original_to = encoder.to

    def recording_to(*args, **kwargs):
        moves.append(str(args[0]))
        return original_to(*args, **kwargs)

    encoder.to = recording_to
    offload = EncoderOffload({"text_encoder": encoder}, "cpu")
    assert moves == ["cpu"]
    out = encoder(ids).last_hidden_state
    assert moves == ["cpu", "cpu", "cpu"]  # in for the call, back after it
    assert torch.equal(out, expected)
    offload.remove()
    encoder(ids)
    assert len(moves) == 3
    trainable = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="trainable"):
        EncoderOffload({"x": trainable}, "cpu")


def test_trainer_offloads_text_and_image_encoders_but_not_the_vae():
    from icreward.adapters import get_adapter
    from icreward.testing.tiny_pipelines import tiny_wan_i2v_pipeline
    from icreward.trainers.adapter_lora import AdapterLoRATrainerMixin
    from icreward.trainers.video_dpo_config import VideoDPOConfig

    holder = AdapterLoRATrainerMixin.__new__(AdapterLoRATrainerMixin)
    holder.adapter = get_adapter(tiny_wan_i2v_pipeline())
    holder.adapter.freeze()
    holder.args = VideoDPOConfig(output_dir="unused", offload_encoders=True)
    holder._move_encoders("meta")  # a non-CPU device: only the VAE is moved there
    assert holder.adapter.vae.post_quant_conv.weight.device.type == "meta"
    assert holder.adapter.pipeline.text_encoder.device.type == "cpu"
    assert set(holder._encoder_offload.modules) == {"text_encoder", "image_encoder"}
    first = holder._encoder_offload
    holder._move_encoders("meta")  # moving again replaces the hooks instead of stacking them
    assert first._handles == [] and holder._encoder_offload is not first


def test_trainer_loads_a_folder_in_torch_dtype_with_fp32_kept_modules(tmp_path):
    from icreward.testing.tiny_pipelines import tiny_wan_i2v_pipeline
    from icreward.trainers.adapter_lora import AdapterLoRATrainerMixin
    from icreward.trainers.diffusion_config import loading_dtype
    from icreward.trainers.video_dpo_config import VideoDPOConfig

    tiny_wan_i2v_pipeline().save_pretrained(tmp_path)
    args = VideoDPOConfig(output_dir="unused", torch_dtype="bfloat16")
    assert loading_dtype(args) == torch.bfloat16
    assert loading_dtype(VideoDPOConfig(output_dir="unused")) == torch.float32
    adapter = AdapterLoRATrainerMixin._resolve_adapter(str(tmp_path), args)
    dtypes = {n: p.dtype for n, p in adapter.pipeline.transformer.named_parameters()}
    assert dtypes["patch_embedding.weight"] == torch.bfloat16
    assert dtypes["scale_shift_table"] == torch.float32  # diffusers' _keep_in_fp32_modules
    with pytest.raises(ValueError, match="torch_dtype"):
        VideoDPOConfig(output_dir="unused", torch_dtype="int8")


@pytest.mark.parametrize("name", sorted(SHIPPED_RECIPES))
def test_shipped_recipe_fits_72_gib_at_published_size(shipped_estimates, name):
    est = shipped_estimates[name]
    assert est.trainer == SHIPPED_RECIPES[name]
    assert est.peak_gib <= 72.0, format_estimate(est)
    assert est.fits
    text = (CONFIGS / f"{name}.yaml").read_text()
    assert f"{est.peak_gib:.2f} GiB" in text, f"{name}.yaml does not state its accounted peak {est.peak_gib:.2f} GiB"
    if est.trainer == "reward_feedback":
        assert est.rows["vae_decode"] > 0  # the differentiable decode is counted


@pytest.mark.parametrize(
    ("script", "config_class", "name"),
    [("dpo", "VideoDPOConfig", n) for n in SHIPPED_RECIPES if SHIPPED_RECIPES[n] == "dpo"]
    + [("grpo", "VideoGRPOConfig", n) for n in SHIPPED_RECIPES if SHIPPED_RECIPES[n] == "grpo"]
    + [
        ("reward_feedback", "RewardFeedbackConfig", n)
        for n in SHIPPED_RECIPES
        if SHIPPED_RECIPES[n] == "reward_feedback"
    ],
)
def test_shipped_recipe_parses_with_its_example_script(script, config_class, name):
    import importlib.util
    import sys

    from trl import ModelConfig, TrlParser

    module_name = f"_example_{script}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, CONFIGS.parent / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    module = sys.modules[module_name]
    parser = TrlParser((module.ScriptArguments, getattr(module, config_class), ModelConfig))
    # bf16 raises on a CPU-only machine; everything else is read as the GPU run reads it
    _, training_args, model_args = parser.parse_args_and_config(
        ["--config", str(CONFIGS / f"{name}.yaml"), "--bf16", "False"]
    )
    recipe = load_recipe(CONFIGS / f"{name}.yaml")
    assert (training_args.num_frames, training_args.height, training_args.width) == (
        recipe["num_frames"],
        recipe["height"],
        recipe["width"],
    )
    assert model_args.model_name_or_path == recipe["model_name_or_path"]
    assert training_args.offload_encoders == recipe.get("offload_encoders", False)


def test_a_vae_without_chunked_decode_is_accounted_as_its_plain_decode():
    from icreward.memory.accountant import account_decode
    from icreward.testing.tiny_pipelines import _tiny_wan_vae

    with torch.device("meta"):
        vae = _tiny_wan_vae(0)
    chunked = account_decode(vae, (1, 16, 4, 8, 8), torch.float32, measure_plain=True)
    vae.enable_tiling()  # tiled decoding is not chunked: the plain decode runs under autograd
    plain = account_decode(vae, (1, 16, 4, 8, 8), torch.float32)
    assert plain.frames_per_chunk == 0 and plain.recompute == 0
    assert plain.held == plain.plain > 0
    assert chunked.frames_per_chunk == 1 and chunked.held + chunked.recompute < chunked.plain
