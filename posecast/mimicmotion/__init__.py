"""The MimicMotion family: the paper's teacher, imported from public weights.

MimicMotion (Tencent, ICML 2025) is Stable Video Diffusion's spatio-temporal UNet
(img2vid-xt-1-1) with a small pose network whose features are added to the UNet's hidden
state right after its first convolution. The reference portrait enters twice, as SVD does: its
CLIP image embedding is the UNet's one cross-attention token, and its VAE latent is
concatenated on the channels of every frame. Sampling is SVD's (EDM-preconditioned
v-prediction, Euler over Karras sigmas) run on overlapping windows of frames that MimicMotion
fuses at every step, each window led by frame 0, the reference's own pose.

  posenet.py   the pose network (MimicMotion's layer names, so its weights load as they are)
  model.py     the network (UNet + pose network), its model folder and sampling recipe
  sampling.py  window indices and fusion weights, the sampler, decoding
  importer.py  `posecast import mimicmotion`: the public checkpoint → a posecast model folder

What is not here yet: input-aware attention in the UNet, fine-tuning, the `teacher` command
for this family and DWPose-style pose drawing (see the project's issues).
"""
