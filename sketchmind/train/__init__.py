"""Training a drawing policy on TRL, in three stages driven by one recipe file.

| module | one idea |
|---|---|
| ``synth`` | cold-start data: expert trajectories through the real agent, filtered as ViLaSR does |
| ``export`` | the same data as LLaMA-Factory ShareGPT, for users who train elsewhere |
| ``collator`` | SFT batches whose labels cover assistant turns only, across multi-image turns |
| ``sft`` | stage 1 (and the SFT after stage 2): TRL ``SFTTrainer``, optional LoRA, true resume |
| ``rejection`` | stage 2: sample k trajectories per puzzle, keep the correct reflective ones |
| ``environment``, ``rewards``, ``grpo`` | stage 3: TRL ``GRPOTrainer`` with a drawing environment |
| ``templates`` | tool-capable chat templates and response schemas TRL needs (Qwen2.5-VL) |
| ``latent_stage``, ``latent_diagnostics`` | the optional latent stages' torch loop; held-out checks of its latents |
| ``recipe``, ``pipeline`` | ``policies/NAME.yaml`` and the resumable stage runner (``sketchmind train``) |
| ``ranks`` | the processes of a ``torchrun`` / ``accelerate launch``: the main one writes, the others wait |
| ``results`` | a trained recipe's eval runs as the README's and model card's tables (``make results``) |

Submodules import ``datasets``, ``trl`` and friends lazily, so ``import sketchmind.train`` stays light.
"""
