"""Named landmarks of mediapipe's face mesh (468 points + 10 iris points), image-left first.

"Right"/"left" are the subject's: the right eye appears on the image's left.
"""

from __future__ import annotations

FOREHEAD, CHIN = 10, 152
UPPER_LIP_INNER_CENTRE, LOWER_LIP_INNER_CENTRE = 13, 14
MOUTH_CORNERS = (61, 291)
INNER_MOUTH_CORNERS = (78, 308)

LIP_OUTLINE = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37,
               39, 40, 185)
UPPER_LIP = (185, 40, 39, 37, 0, 267, 269, 270, 409, 191, 80, 81, 82, 13, 312, 311, 310, 415)
LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324)

# eyelids as matching (upper, lower) pairs, corner to corner
RIGHT_EYE_LIDS = ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154),
                  (173, 155))
LEFT_EYE_LIDS = ((466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381),
                 (398, 382))
RIGHT_IRIS = tuple(range(468, 473))
LEFT_IRIS = tuple(range(473, 478))


def mouth_opening(face) -> float:
    """Inner-lip gap over mouth width for one frame's (478, 3) face points (0 = closed)."""
    import numpy as np

    gap = np.linalg.norm(face[UPPER_LIP_INNER_CENTRE, :2] - face[LOWER_LIP_INNER_CENTRE, :2])
    width = np.linalg.norm(face[MOUTH_CORNERS[0], :2] - face[MOUTH_CORNERS[1], :2])
    return float(gap / max(width, 1e-6))
