"""Prefix-tuning (Li & Liang 2021), many prefixes in one batch, and gist-style prompt compression (Mu et al. 2023).

- ``config.PrefixConfig`` / ``model.Prefix``: per-layer key/value prefixes, trained through an embedding -> MLP
  reparameterisation and merged into plain KV tensors for serving;
- ``train``: ``lmcontrol train prefix`` (next-token CE on the target only, the LM frozen);
- ``control.PrefixLibrary``: many prefix artifacts, each row of one batch naming its own (or none);
- ``compress``: distil a long prompt into k soft KV tokens by KL to the full-prompt model.
"""
