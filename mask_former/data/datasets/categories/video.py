"""Video instance segmentation: YouTube-VIS 2019 and 2021 (40 classes each, as upstream Mask2Former's
video project lists them) and OVIS (25 classes, named as in its annotation files, "Vehical" included).

Each row is (dataset category id, name, color); every category is a thing. Row ``i`` is contiguous
id ``i``: the ids of each dataset are 1..N in order.
"""

_YTVIS_2019_ROWS = [
    (1, "person", (220, 20, 60)), (2, "giant_panda", (0, 82, 0)), (3, "lizard", (119, 11, 32)),
    (4, "parrot", (165, 42, 42)), (5, "skateboard", (134, 134, 103)), (6, "sedan", (0, 0, 142)),
    (7, "ape", (255, 109, 65)), (8, "dog", (0, 226, 252)), (9, "snake", (5, 121, 0)),
    (10, "monkey", (0, 60, 100)), (11, "hand", (250, 170, 30)), (12, "rabbit", (100, 170, 30)),
    (13, "duck", (179, 0, 194)), (14, "cat", (255, 77, 255)), (15, "cow", (120, 166, 157)),
    (16, "fish", (73, 77, 174)), (17, "train", (0, 80, 100)), (18, "horse", (182, 182, 255)),
    (19, "turtle", (0, 143, 149)), (20, "bear", (174, 57, 255)), (21, "motorbike", (0, 0, 230)),
    (22, "giraffe", (72, 0, 118)), (23, "leopard", (255, 179, 240)), (24, "fox", (0, 125, 92)),
    (25, "deer", (209, 0, 151)), (26, "owl", (188, 208, 182)), (27, "surfboard", (145, 148, 174)),
    (28, "airplane", (106, 0, 228)), (29, "truck", (0, 0, 70)), (30, "zebra", (199, 100, 0)),
    (31, "tiger", (166, 196, 102)), (32, "elephant", (110, 76, 0)), (33, "snowboard", (133, 129, 255)),
    (34, "boat", (0, 0, 192)), (35, "shark", (183, 130, 88)), (36, "mouse", (130, 114, 135)),
    (37, "frog", (107, 142, 35)), (38, "eagle", (0, 228, 0)), (39, "earless_seal", (174, 255, 243)),
    (40, "tennis_racket", (255, 208, 186)),
]

_YTVIS_2021_ROWS = [
    (1, "airplane", (106, 0, 228)), (2, "bear", (174, 57, 255)), (3, "bird", (255, 109, 65)),
    (4, "boat", (0, 0, 192)), (5, "car", (0, 0, 142)), (6, "cat", (255, 77, 255)),
    (7, "cow", (120, 166, 157)), (8, "deer", (209, 0, 151)), (9, "dog", (0, 226, 252)),
    (10, "duck", (179, 0, 194)), (11, "earless_seal", (174, 255, 243)), (12, "elephant", (110, 76, 0)),
    (13, "fish", (73, 77, 174)), (14, "flying_disc", (250, 170, 30)), (15, "fox", (0, 125, 92)),
    (16, "frog", (107, 142, 35)), (17, "giant_panda", (0, 82, 0)), (18, "giraffe", (72, 0, 118)),
    (19, "horse", (182, 182, 255)), (20, "leopard", (255, 179, 240)), (21, "lizard", (119, 11, 32)),
    (22, "monkey", (0, 60, 100)), (23, "motorbike", (0, 0, 230)), (24, "mouse", (130, 114, 135)),
    (25, "parrot", (165, 42, 42)), (26, "person", (220, 20, 60)), (27, "rabbit", (100, 170, 30)),
    (28, "shark", (183, 130, 88)), (29, "skateboard", (134, 134, 103)), (30, "snake", (5, 121, 0)),
    (31, "snowboard", (133, 129, 255)), (32, "squirrel", (188, 208, 182)), (33, "surfboard", (145, 148, 174)),
    (34, "tennis_racket", (255, 208, 186)), (35, "tiger", (166, 196, 102)), (36, "train", (0, 80, 100)),
    (37, "truck", (0, 0, 70)), (38, "turtle", (0, 143, 149)), (39, "whale", (0, 228, 0)),
    (40, "zebra", (199, 100, 0)),
]

# Colors: YouTube-VIS's for the classes both datasets have, COCO's palette for the others.
_OVIS_ROWS = [
    (1, "Person", (220, 20, 60)), (2, "Bird", (255, 109, 65)), (3, "Cat", (255, 77, 255)),
    (4, "Dog", (0, 226, 252)), (5, "Horse", (182, 182, 255)), (6, "Sheep", (0, 82, 0)),
    (7, "Cow", (120, 166, 157)), (8, "Elephant", (110, 76, 0)), (9, "Bear", (174, 57, 255)),
    (10, "Zebra", (199, 100, 0)), (11, "Giraffe", (72, 0, 118)), (12, "Poultry", (255, 179, 240)),
    (13, "Giant_panda", (0, 125, 92)), (14, "Lizard", (119, 11, 32)), (15, "Parrot", (165, 42, 42)),
    (16, "Monkey", (0, 60, 100)), (17, "Rabbit", (100, 170, 30)), (18, "Tiger", (166, 196, 102)),
    (19, "Fish", (73, 77, 174)), (20, "Turtle", (0, 143, 149)), (21, "Bicycle", (119, 11, 32)),
    (22, "Motorcycle", (0, 0, 230)), (23, "Airplane", (106, 0, 228)), (24, "Boat", (0, 0, 192)),
    (25, "Vehical", (0, 0, 142)),
]


def _categories(rows):
    return [{"id": i, "name": name, "isthing": 1, "color": list(color)} for i, name, color in rows]


YTVIS_2019_CATEGORIES = _categories(_YTVIS_2019_ROWS)
YTVIS_2021_CATEGORIES = _categories(_YTVIS_2021_ROWS)
OVIS_CATEGORIES = _categories(_OVIS_ROWS)
