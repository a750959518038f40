"""The diffusion core shared by DGLM and Diffusion-LM: the maths of a noise schedule (``schedule``), samplers as
pure functions over a denoiser callable (``samplers``) and guidance as wrappers of that callable (``guidance``).

A method supplies only its network, wrapped as a ``Denoiser``: ``denoiser(x_t, t, alpha_bar) -> Prediction``
(x̂0 and ε̂ at model time t (B,) and noise level ᾱ_t (B,)). ``Schedule.denoiser`` builds one from a network that
predicts x0, ε or v.
"""
