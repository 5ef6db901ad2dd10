"""Streaming a causal student, for every model family: the rollout over a `StudentBackend`
(rollout.py), the host-side mask bookkeeping of its chunks (planner.py) and the pose inputs
chunk by chunk (pose_maps.py)."""
