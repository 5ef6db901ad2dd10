"""The MimicMotion family: the paper's teacher, imported from public weights.

MimicMotion (Tencent, ICML 2025) is Stable Video Diffusion's spatio-temporal UNet
(img2vid-xt-1-1) with a small pose network whose features are added to the UNet's hidden
state right after its first convolution. The reference portrait enters twice, as SVD does: its
CLIP image embedding is the UNet's one cross-attention token, and its VAE latent is
concatenated on the channels of every frame. Sampling is SVD's (EDM-preconditioned
v-prediction, Euler over Karras sigmas) run on overlapping windows of frames that MimicMotion
fuses at every step, each window led by frame 0, the reference's own pose.

  posenet.py    the pose network (MimicMotion's layer names, so its weights load as they are)
  model.py      the network (UNet + pose network), its model folder and sampling recipe
  sampling.py   window indices and fusion weights, the sampler, decoding
  importer.py   `posecast import mimicmotion`: the public checkpoint → a posecast model folder
  teacher.py    the teacher behind posecast's teacher interface (`posecast teacher`, distill)
  attention.py  input-aware sparse attention in the UNet (the paper's fine-tuning)
  train.py      fine-tuning with SVD's EDM loss (`posecast train --init-from`)
  causal.py     the causal student's UNet: block-causal chunks over a KV cache
  student.py    the student: its settings, loading, and its StudentBackend for the shared
                streaming rollout (posecast/streaming/)
  distill.py    its side of distillation (the loop is train/distill.py)
  family.py     the family's entry in posecast/families.py's registry
  bench.py      its speed at real size, random weights (`posecast bench teacher`, `bench render`)
"""
