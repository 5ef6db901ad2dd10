"""posecast's own family: a pose-conditioned video DiT trained with flow matching.

The teacher is a DiT over windows of frames (3-D RoPE, adaLN, a pose guider), trained from
scratch on clip folders; the student is the same network made block-causal over a KV cache,
distilled to a few steps with input-aware sparse attention. The bundled 64×64 starter and the
`tiny`…`large` presets are this family.

  denoiser.py   the network (teacher, student and critic share it)
  kv_cache.py   the causal student's ring of past keys and values, per layer
  codecs.py     frames ↔ latents: pixels, or a diffusers VAE with an optional fast decoder
  pretrained.py model folders: config.json + model.safetensors + model card
  sampling.py   teacher sampling over fused windows (`posecast teacher`)
  train.py      teacher training by flow matching (`posecast train`)
  student.py    the causal student and its StudentBackend for the shared streaming rollout
                (posecast/streaming/)
  distill.py    its side of distillation (the loop is train/distill.py)
  bench.py      its speed with random weights (`posecast bench teacher`, `bench render`)
  family.py     the family's entry in posecast/families.py's registry
"""
