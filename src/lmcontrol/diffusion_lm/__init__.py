"""Diffusion-LM (Li et al. 2022, "Diffusion-LM Improves Controllable Text Generation").

A continuous diffusion model over word embeddings: a sequence of 64 word vectors is denoised all at once, so
any differentiable criterion on the latent can steer it (plug-and-play control) and several criteria compose.

Layout (see ``docs/diffusion_lm.md``): ``config`` (the frozen config), ``vocab`` (word-level vocabulary),
``schedule`` (the sqrt noise schedule, pure functions), ``model`` (embeddings + transformer denoiser),
``losses`` (the end-to-end objective), ``sampling`` (pure samplers), ``classifiers`` (noised-latent
classifiers), ``spans`` (syntax spans: definition, check, span-classifier trainer), ``control`` (guidance,
infilling, the pipeline), ``fudge`` (the FUDGE AR baseline as a ``Control``), ``train`` (trainers), ``plugin``
(registry).
"""
