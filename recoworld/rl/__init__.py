"""Everything that imports Ray RLlib: training, the slate RLModule, the policy wrapper, the
multi-agent adapter, and the observation features they share.

Importing `recoworld.rl` itself imports no Ray; its modules do.
"""
