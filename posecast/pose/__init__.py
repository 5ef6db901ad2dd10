"""Keypoints: the schema, extraction, smoothing, drawing, body regions and pose similarity."""

from posecast.pose.keypoints import PARTS, Keypoints
from posecast.pose.regions import Region, region_label_map, region_masks, token_regions
from posecast.pose.similarity import most_similar_past_frames, pose_distance_matrix, rigid_residual

__all__ = ["PARTS", "Keypoints", "Region", "most_similar_past_frames", "pose_distance_matrix",
           "region_label_map", "region_masks", "rigid_residual", "token_regions"]
