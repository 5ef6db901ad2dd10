"""Training data: folders of clips with a keypoint cache, and generated test clips."""
