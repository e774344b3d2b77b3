"""COCO's 80 class names and how much of a dataset's label set they cover (synonyms and plurals folded)."""
from __future__ import annotations

import re

COCO_NAMES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant stop_sign parking_meter "
    "bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase frisbee "
    "skis snowboard sports_ball kite baseball_bat baseball_glove skateboard surfboard tennis_racket bottle wine_glass "
    "cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake chair couch "
    "potted_plant bed dining_table toilet tv laptop mouse remote keyboard cell_phone microwave oven toaster sink "
    "refrigerator book clock vase scissors teddy_bear hair_drier toothbrush").split()
SYNONYMS = {"motorbike": "motorcycle", "bike": "bicycle", "aeroplane": "airplane", "plane": "airplane",
            "people": "person", "pedestrian": "person", "human": "person", "man": "person", "woman": "person",
            "tvmonitor": "tv", "monitor": "tv", "television": "tv", "sofa": "couch", "diningtable": "dining_table",
            "table": "dining_table", "pottedplant": "potted_plant", "plant": "potted_plant", "phone": "cell_phone",
            "mobile_phone": "cell_phone", "cellphone": "cell_phone", "ball": "sports_ball", "doughnut": "donut",
            "hairdryer": "hair_drier", "fridge": "refrigerator", "lorry": "truck", "van": "car", "taxi": "car",
            "ship": "boat", "puppy": "dog", "kitten": "cat", "calf": "cow", "teddy": "teddy_bear"}


def _norm(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    s = SYNONYMS.get(s, s)
    if s not in COCO_NAMES and s.endswith("s"):
        s = SYNONYMS.get(s[:-1], s[:-1])
    return s


def coco_overlap(names) -> float:
    """Share of class names that are COCO classes."""
    return sum(_norm(n) in COCO_NAMES for n in names) / max(len(names), 1)
