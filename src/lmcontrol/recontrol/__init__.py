"""RE-Control (Kong et al. 2024): align an LM at test time by editing hidden states with a value network.

``rollouts`` collects states and rewards, ``train`` fits the value network by the Bellman equation,
``control`` edits states during decoding, ``baselines`` holds the methods it is compared with.
"""
