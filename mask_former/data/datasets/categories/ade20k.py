"""ADE20K SceneParsing (150 classes) category data, with the ids, colors and thing/stuff split
that upstream Mask2Former uses.

Class ``i`` of the 150-class benchmark has id ``i`` (the raw annotation value minus one). The class
names are detectron2's ``ADE20K_SEM_SEG_CATEGORIES``; the 100 thing classes are the classes of the
ADE20K instance benchmark.
"""
from detectron2.data.datasets.builtin_meta import ADE20K_SEM_SEG_CATEGORIES

# One RGB color per class, in class-id order.
ADE20K_150_COLORS = [
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3),
    (120, 120, 80), (140, 140, 140), (204, 5, 255), (230, 230, 230), (4, 250, 7),
    (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70), (8, 255, 51),
    (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3),
    (0, 102, 200), (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71),
    (255, 9, 224), (9, 7, 230), (220, 220, 220), (255, 9, 92), (112, 9, 255),
    (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7),
    (255, 122, 8), (0, 255, 20), (255, 8, 41), (255, 5, 153), (6, 51, 255),
    (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140), (250, 10, 15),
    (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0),
    (0, 0, 255), (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255),
    (11, 200, 200), (255, 82, 0), (0, 255, 245), (0, 61, 255), (0, 255, 112),
    (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173),
    (10, 0, 255), (173, 255, 0), (0, 255, 153), (255, 92, 0), (255, 0, 255),
    (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20), (255, 184, 184),
    (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194),
    (0, 255, 82), (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255),
    (0, 122, 255), (0, 255, 163), (255, 153, 0), (0, 255, 10), (255, 112, 0),
    (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255),
    (0, 214, 255), (255, 0, 112), (92, 255, 0), (0, 224, 255), (112, 224, 255),
    (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0), (255, 0, 163),
    (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235),
    (245, 0, 255), (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0),
    (0, 204, 255), (20, 0, 255), (255, 255, 0), (0, 153, 255), (0, 41, 255),
    (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0),
    (0, 133, 255), (255, 214, 0), (25, 194, 194), (102, 255, 0), (92, 0, 255),
]

# The 100 classes of the ADE20K instance benchmark: (id in the 150-class space, instance name).
# Instance category k (1-based, the red channel of ``annotations_instance`` PNGs) is row k - 1.
ADE20K_INSTANCE_CATEGORIES = [
    (7, "bed"), (8, "windowpane"), (10, "cabinet"), (12, "person"), (14, "door"),
    (15, "table"), (18, "curtain"), (19, "chair"), (20, "car"), (22, "painting"),
    (23, "sofa"), (24, "shelf"), (27, "mirror"), (30, "armchair"), (31, "seat"),
    (32, "fence"), (33, "desk"), (35, "wardrobe"), (36, "lamp"), (37, "bathtub"),
    (38, "railing"), (39, "cushion"), (41, "box"), (42, "column"), (43, "signboard"),
    (44, "chest of drawers"), (45, "counter"), (47, "sink"), (49, "fireplace"),
    (50, "refrigerator"), (53, "stairs"), (55, "case"), (56, "pool table"), (57, "pillow"),
    (58, "screen door"), (62, "bookcase"), (64, "coffee table"), (65, "toilet"),
    (66, "flower"), (67, "book"), (69, "bench"), (70, "countertop"), (71, "stove"),
    (72, "palm"), (73, "kitchen island"), (74, "computer"), (75, "swivel chair"),
    (76, "boat"), (78, "arcade machine"), (80, "bus"), (81, "towel"), (82, "light"),
    (83, "truck"), (85, "chandelier"), (86, "awning"), (87, "streetlight"), (88, "booth"),
    (89, "television receiver"), (90, "airplane"), (92, "apparel"), (93, "pole"),
    (95, "bannister"), (97, "ottoman"), (98, "bottle"), (102, "van"), (103, "ship"),
    (104, "fountain"), (107, "washer"), (108, "plaything"), (110, "stool"), (111, "barrel"),
    (112, "basket"), (115, "bag"), (116, "minibike"), (118, "oven"), (119, "ball"),
    (120, "food"), (121, "step"), (123, "trade name"), (124, "microwave"), (125, "pot"),
    (126, "animal"), (127, "bicycle"), (129, "dishwasher"), (130, "screen"),
    (132, "sculpture"), (133, "hood"), (134, "sconce"), (135, "vase"), (136, "traffic light"),
    (137, "tray"), (138, "ashcan"), (139, "fan"), (142, "plate"), (143, "monitor"),
    (144, "bulletin board"), (146, "radiator"), (147, "glass"), (148, "clock"), (149, "flag"),
]

_THING_IDS = {cat_id for cat_id, _ in ADE20K_INSTANCE_CATEGORIES}

ADE20K_150_CATEGORIES = [
    {"id": i, "name": name, "isthing": int(i in _THING_IDS), "color": list(color)}
    for i, (name, color) in enumerate(zip(ADE20K_SEM_SEG_CATEGORIES, ADE20K_150_COLORS))
]
