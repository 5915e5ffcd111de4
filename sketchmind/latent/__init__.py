"""Latent visual reasoning (Mirage-style): the model imagines its drawings as K hidden vectors.

Instead of rendering a tool call and reading the new view back as image tokens, a latent trajectory
continues the same assistant turn with ``<|latent_start|>`` + K x ``<|latent_pad|>`` + ``<|latent_end|>``;
the pad slots carry vectors, not token embeddings.

- ``tokens``: the three special tokens, ``latent.json`` and the learned projection P (the checkpoint contract);
- ``data``: synth rows (expert trajectories with rendered views) to latent rows plus their target images;
- ``targets``: a rendered view through the model's own vision encoder, pooled into K target vectors;
- ``forward``: the two ways of filling the slots (teacher-forced targets; the P(h_prev) chain);
- ``losses``: stage 1's grounding terms and CE, stage 2's CE through the chain.

The training loop that uses them (and its diagnostics) is ``sketchmind.train.latent_stage`` (and
``latent_diagnostics``): training code lives in ``train``, which imports ``latent``, never the reverse.

torch and transformers are imported inside the functions that need them, as elsewhere in sketchmind.
"""
