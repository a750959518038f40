"""Diffusion-LM (Li et al. 2022, "Diffusion-LM Improves Controllable Text Generation").

A continuous diffusion model over word embeddings: a sequence of 64 word vectors is denoised all at once, so
any differentiable criterion on the latent can steer it (plug-and-play control) and several criteria compose.

Layout (see ``docs/diffusion_lm.md``): ``config`` (the frozen config, artifact defaults), ``vocab`` (word-level
vocabulary), ``model`` (embeddings + transformer denoiser; its ``Denoiser`` with imputation and the clamping
trick for the shared samplers of ``lmcontrol.diffusion``), ``losses`` (the end-to-end objective),
``classifiers`` (noised-latent classifiers), ``spans`` (syntax spans: definition, check, span-classifier
trainer), ``targets`` (what a caller asks for and its classifier objectives), ``pipeline`` (sampling under a
target), ``control`` (``--control fudge``: the FUDGE AR baseline), ``train`` (trainers), ``bench``
(``lmcontrol bench diffusion-lm``), ``plugin`` (registry).
"""
