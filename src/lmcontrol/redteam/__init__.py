"""Red-teaming as posterior inference: an investigator q(x | y) trained by SFT, a variational objective and
Frank-Wolfe rounds; attacks, strategy clusters, baselines (nanoGCG, plain sampling) and audits of controlled
targets (Li et al. 2025, "Eliciting Language Model Behaviors with Investigator Agents")."""
