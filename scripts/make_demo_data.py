#!/usr/bin/env python3
"""Generate tuneforge's demo data set: e-commerce product listings -> JSON attributes.

Every row is ``{"text": <listing>, "attributes": {"brand", "product", "colour", "size",
"material", "price"}}``. The listings are synthetic: a hand-written catalogue of invented brands,
product types, colours, sizes and materials, rendered through several listing styles
(marketplace titles, descriptive sentences, " | " bullet lists, second-hand adverts, all-caps
sellers, terse one-liners, spec sheets, promotional copy).

Labelling conventions (checked by ``check_row`` before anything is written):

* ``product`` is always present: a short lowercase product type that appears in the text.
* ``brand`` is copied exactly as written in the text (an all-caps listing gives an all-caps brand).
* ``colour``, ``material`` and ``product`` are lowercase and appear in the text (ignoring case).
* ``size`` is lowercase for words and measurements ("queen", "30x40 cm", "500 ml", "2 L" keeps
  the litre symbol) and kept as written for codes and numbers ("XL", "EU 42", "W32 L30", "10.5").
* ``price`` is the bare number (float, at most 2 decimals) of the asking price, which the text
  states in some currency notation; sale listings ("was $59.99, now $39.99") label the current
  price, second-hand ones ("bought for $80, asking $40") the asking price.
* ``null`` means the listing does not state the attribute; the checks make sure that no other
  known brand, colour, material, size or product term appears in the text, and that a listing
  with a null price contains no amount of money.

The pool is generated with a fixed seed, de-duplicated, shuffled and split into 200 training and
220 test rows, so both splits come from the same distribution and share no text.

Usage: python scripts/make_demo_data.py [--out-dir DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

SEED = 20250611
N_TRAIN = 200
N_TEST = 220
MAX_WORDS = 45
FIELDS = ("brand", "product", "colour", "size", "material", "price")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "tuneforge" / "resources" / "demo"

# Probability that a row states every attribute; the rest lack at least one (target ~30 %).
P_COMPLETE = 0.68


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------

def P(name, price, sizes=None, materials=None, colours=None, features=(), mat_colours=None):
    """One product type.

    sizes/materials None: the product never states one (natural null).
    colours None: use the category palette; [] means the product never states a colour.
    mat_colours: material -> allowed colours (overrides the palette for that material).
    """
    return dict(name=name, price=price, sizes=sizes, materials=materials, colours=colours,
                features=list(features), mat_colours=mat_colours or {})


ALPHA = ["XS", "S", "M", "L", "XL", "XXL"]
ALPHA_SML = ["S", "M", "L", "XL"]
BED = ["single", "double", "queen", "king", "super king"]
SHOE = ["EU 37", "EU 38", "EU 39", "EU 40", "EU 41", "EU 42", "EU 43", "EU 44", "EU 45",
        "UK 6", "UK 8", "UK 9", "US 9", "US 10", "8", "8.5", "9", "9.5", "10", "10.5", "11", "12"]
JEANS = ["W28 L30", "W30 L32", "W32 L32", "W32 L30", "W34 L32", "W36 L34"]

CATEGORIES = {
    "apparel": dict(
        brands=["Nordvik", "Harlow & Finch", "Tidewater", "Kestrel Lane", "Mabel Row",
                "UrbanThread", "BasicLine"],
        models=[],
        genders=["Men's", "Women's", "Unisex"],
        colours=["black", "white", "navy blue", "heather grey", "charcoal grey", "olive green",
                 "burgundy", "beige", "mustard yellow", "sky blue", "dusty pink", "forest green",
                 "rust orange", "cream"],
        features=["machine washable", "relaxed fit", "breathable", "pre-shrunk"],
        contexts=["wardrobe", "everyday look", "weekend outfits"],
        products=[
            P("t-shirt", (9, 35), ALPHA, ["cotton", "organic cotton", "bamboo viscose", "linen"],
              features=["pack of 3", "crew neck", "tag-free label"]),
            P("hoodie", (25, 80), ALPHA, ["cotton", "fleece", "organic cotton",
                                          "recycled polyester"],
              features=["kangaroo pocket", "brushed interior"]),
            P("rain jacket", (45, 180), ALPHA, ["recycled polyester", "nylon", "ripstop nylon"],
              features=["fully waterproof", "packs into its own pocket",
                        "10,000 mm waterproof rating"]),
            P("jeans", (30, 110), JEANS, ["denim", "stretch denim", "organic cotton"],
              features=["slim fit", "5-pocket design"]),
            P("wrap dress", (30, 120), ALPHA, ["linen", "viscose", "cotton", "silk"],
              features=["midi length", "adjustable tie waist"]),
            P("sweater", (35, 160), ALPHA, ["merino wool", "cashmere", "wool blend", "cotton"],
              features=["ribbed cuffs", "hand wash only"]),
            P("socks", (8, 25), ["EU 35-38", "EU 39-42", "EU 43-46", "one size"],
              ["merino wool", "cotton", "bamboo viscose"],
              features=["pack of 3", "pack of 5", "cushioned sole"]),
            P("beanie", (12, 45), ["one size"], ["merino wool", "acrylic", "cashmere"],
              features=["double-layer knit"]),
            P("chino trousers", (30, 90), JEANS, ["cotton twill", "organic cotton"],
              features=["tapered leg"]),
            P("baseball cap", (10, 35), ["one size"], None,
              features=["adjustable strap", "curved brim"]),
        ]),
    "shoes": dict(
        brands=["Strideon", "Vantor", "Peakline", "Soleva", "Brixby", "Fleetfoot"],
        models=["Aero 3", "Cloudstep", "Trail Pulse 2", "Glide Pro", "Tempo 5", "Summit X"],
        genders=["Men's", "Women's", "Unisex"],
        colours=["black", "white", "navy blue", "grey", "tan", "cognac brown", "olive green",
                 "burgundy", "off-white", "sand", "coral pink"],
        features=["cushioned midsole", "non-slip outsole", "removable insole", "wide fit",
                  "10 mm heel drop"],
        contexts=["daily stride", "weekend walks", "commute"],
        products=[
            P("running shoes", (45, 180), SHOE, ["mesh", "engineered mesh", "recycled polyester"]),
            P("hiking boots", (70, 220), SHOE, ["leather", "suede", "nubuck"],
              features=["waterproof membrane", "ankle support"]),
            P("sneakers", (35, 140), SHOE, ["canvas", "leather", "vegan leather", "suede"]),
            P("sandals", (20, 90), SHOE, ["leather", "cork", "rubber"],
              features=["adjustable straps"]),
            P("loafers", (50, 180), SHOE, ["leather", "suede"], features=["hand-stitched"]),
            P("ankle boots", (60, 200), SHOE, ["leather", "suede", "vegan leather"],
              features=["side zip", "block heel"]),
            P("slippers", (15, 60), SHOE, ["wool felt", "sheepskin", "fleece"],
              features=["memory insole"]),
        ]),
    "electronics": dict(
        brands=["Voltix", "Ampere Labs", "Nexora", "Klikk", "Lumora", "ChargeCraft"],
        models=["X2", "Pro", "Slim", "Mini", "Max 20"],
        genders=[],
        colours=["matte black", "space grey", "white", "midnight blue", "graphite",
                 "mint green", "lavender"],
        features=["2-year warranty", "1-year warranty", "rated 4.7/5 by buyers"],
        contexts=["workspace", "everyday carry", "travel kit"],
        products=[
            P("phone case", (9, 40), ["6.1 inch", "6.7 inch", "6.4 inch"],
              ["silicone", "tpu", "vegan leather", "recycled plastic"],
              features=["shock-absorbing corners", "MagSafe compatible", "raised camera lip"]),
            P("laptop sleeve", (15, 55), ["13 inch", "14 inch", "15.6 inch", "16 inch"],
              ["neoprene", "felt", "vegan leather", "recycled polyester"],
              features=["padded interior", "front zip pocket"]),
            P("usb-c cable", (7, 25), ["1 m", "2 m", "3 m"], ["braided nylon", "silicone"],
              features=["supports 100W fast charging", "pack of 2", "480 Mbps data transfer"]),
            P("wireless charger", (18, 60), None, ["aluminium", "silicone", "fabric"],
              features=["15W fast charging", "LED indicator"]),
            P("bluetooth speaker", (25, 150), None, ["fabric", "aluminium"],
              features=["IPX7 waterproof", "12-hour battery life"]),
            P("wireless mouse", (12, 70), None, None,
              features=["silent clicks", "up to 12 months battery", "2.4 GHz receiver"]),
            P("power bank", (20, 70), None, ["aluminium"],
              features=["10,000 mAh", "20,000 mAh", "charges 2 devices at once"]),
            P("laptop stand", (20, 60), None, ["aluminium", "bamboo"],
              features=["6 height settings", "foldable"]),
            P("wireless earbuds", (25, 180), None, None,
              features=["30-hour battery life", "active noise cancelling"]),
        ]),
    "furniture": dict(
        brands=["Casa Lume", "Fjordhaus", "Holmvik", "Studio Arbor", "Linden & Co", "Nestwell"],
        models=[],
        genders=[],
        colours=["white", "black", "grey", "charcoal grey", "emerald green", "mustard yellow",
                 "dusty pink", "navy blue", "beige"],
        features=["easy assembly", "5-year warranty", "free delivery"],
        contexts=["living room", "home office", "bedroom"],
        products=[
            P("office chair", (80, 350), None, ["mesh", "faux leather", "velvet"],
              features=["adjustable lumbar support", "holds up to 120 kg"]),
            P("bookshelf", (60, 300), ["80x30x180 cm", "60x28x150 cm", "40x30x120 cm"],
              ["oak", "pine", "walnut", "engineered wood", "bamboo"],
              features=["5 shelves", "wall anchor included"]),
            P("coffee table", (90, 450), ["120x60 cm", "100x50 cm", "80x80 cm"],
              ["oak", "walnut", "marble", "acacia wood", "tempered glass"],
              features=["hidden storage shelf"]),
            P("bar stool", (40, 160), ["65 cm", "75 cm"], ["rattan", "metal", "velvet", "beech wood"],
              features=["set of 2", "built-in footrest"]),
            P("bed frame", (150, 1400), BED, ["oak", "pine", "metal", "velvet"],
              features=["under-bed storage", "slatted base"]),
            P("side table", (35, 180), ["40x40 cm", "45x45 cm"], ["oak", "marble", "rattan", "metal"]),
            P("desk", (90, 600), ["120x60 cm", "140x70 cm", "100x50 cm"],
              ["oak", "walnut", "pine", "bamboo", "engineered wood"],
              features=["cable management tray"]),
            P("armchair", (180, 900), None, ["velvet", "linen", "boucle"],
              features=["removable cushion covers"]),
            P("tv stand", (80, 400), ["120 cm", "140 cm", "160 cm"], ["oak", "walnut", "engineered wood"],
              features=["2 sliding doors"]),
        ]),
    "kitchen": dict(
        brands=["Chefmate", "Ferro & Salt", "Brunnholt", "Pantrywise", "Cucina Viva", "Hestia Home"],
        models=[],
        genders=[],
        colours=["black", "matte black", "cherry red", "sage green", "cream", "navy blue",
                 "white", "slate grey"],
        features=["lifetime guarantee", "2-year warranty"],
        contexts=["kitchen", "morning routine"],
        products=[
            P("frying pan", (15, 120), ["20 cm", "24 cm", "28 cm", "30 cm"],
              ["cast iron", "stainless steel", "carbon steel", "aluminium"],
              features=["induction compatible", "oven safe", "PFOA-free"]),
            P("chef's knife", (20, 150), ["15 cm", "20 cm", "8 inch"],
              ["stainless steel", "damascus steel", "carbon steel", "ceramic"],
              colours=["black", "white", "navy blue"], features=["full tang", "hand-sharpened"]),
            P("french press", (18, 60), ["350 ml", "600 ml", "1 L"],
              ["borosilicate glass", "stainless steel"], features=["4-level filter"]),
            P("cutting board", (12, 70), ["30x20 cm", "40x30 cm", "45x30 cm"],
              ["bamboo", "acacia wood", "olive wood", "walnut", "beech wood"], colours=[],
              features=["juice groove", "reversible"]),
            P("saucepan", (20, 150), ["1.5 L", "2 L", "3 L"],
              ["stainless steel", "enamelled cast iron", "copper"],
              features=["lid included", "induction compatible"]),
            P("electric kettle", (25, 110), ["1 L", "1.5 L", "1.7 L"], ["stainless steel", "glass"],
              features=["auto shut-off", "boils in 3 minutes"]),
            P("travel mug", (10, 35), ["350 ml", "450 ml", "500 ml"],
              ["stainless steel", "ceramic", "bamboo fibre"],
              features=["leak-proof lid", "keeps drinks hot for 6 hours", "dishwasher safe"]),
            P("mixing bowl set", (15, 60), None, ["stainless steel", "glass", "ceramic"],
              features=["set of 3", "set of 5", "nesting design", "dishwasher safe"]),
            P("dinner plates", (20, 90), ["27 cm", "26 cm"], ["stoneware", "porcelain"],
              features=["set of 4", "set of 6", "microwave safe"]),
        ]),
    "home_textiles": dict(
        brands=["Loomwell", "Dreamweave", "Hearth & Home", "Sundstrom", "Pillowry", "Casa Lino"],
        models=[],
        genders=[],
        colours=["white", "ivory", "sage green", "dusty pink", "navy blue", "charcoal grey",
                 "terracotta", "ochre", "stone grey", "lavender", "teal"],
        features=["machine washable", "OEKO-TEX certified", "30-day returns"],
        contexts=["bedroom", "living room", "bathroom"],
        products=[
            P("duvet cover", (30, 150), BED, ["cotton", "linen", "egyptian cotton", "cotton sateen"],
              features=["400 thread count", "includes 2 pillowcases", "hidden zip closure"]),
            P("bath towel", (10, 45), ["50x100 cm", "70x140 cm", "90x150 cm"],
              ["cotton", "egyptian cotton", "turkish cotton", "bamboo"],
              features=["set of 2", "600 gsm", "quick-drying"]),
            P("throw blanket", (25, 120), ["130x170 cm", "150x200 cm"],
              ["wool", "chenille", "sherpa fleece", "cotton"], features=["fringed edges"]),
            P("cushion cover", (8, 35), ["45x45 cm", "50x50 cm", "30x50 cm"],
              ["velvet", "linen", "cotton", "boucle"],
              features=["set of 2", "set of 4", "invisible zip"]),
            P("curtains", (25, 120), ["140x230 cm", "140x260 cm", "200x240 cm"],
              ["linen", "velvet", "polyester", "cotton"],
              features=["blackout lining", "sold as a pair"]),
            P("rug", (40, 450), ["120x170 cm", "160x230 cm", "200x300 cm"],
              ["jute", "wool", "cotton", "recycled polyester"], features=["non-shed pile"]),
            P("fitted sheet", (15, 60), BED, ["cotton percale", "linen", "bamboo", "cotton"],
              features=["deep pocket", "elasticated all round"]),
        ]),
    "sports": dict(
        brands=["Trailmark", "Summitra", "Aquaflow", "Ridgeback Outdoor", "Pulsefit", "Alpenzo"],
        models=["Apex", "Venture 2", "Flow", "Ultra"],
        genders=[],
        colours=["black", "orange", "forest green", "royal blue", "lime green", "red", "grey",
                 "purple", "teal", "sand"],
        features=["lifetime warranty", "rated 4.8/5 by buyers"],
        contexts=["next adventure", "training", "weekend trips"],
        products=[
            P("yoga mat", (15, 90), ["183x61 cm", "183x66 cm"], ["natural rubber", "tpe", "cork", "pvc"],
              features=["non-slip surface", "carry strap included"]),
            P("water bottle", (10, 45), ["500 ml", "750 ml", "1 L"],
              ["stainless steel", "tritan", "glass", "aluminium"],
              features=["BPA-free", "keeps drinks cold for 24 hours", "leak-proof lid"]),
            P("camping tent", (60, 400), ["2-person", "3-person", "4-person"],
              ["ripstop nylon", "polyester"],
              features=["sets up in 5 minutes", "3000 mm waterproof rating", "ultralight"]),
            P("sleeping bag", (35, 250), ["220x80 cm", "210x75 cm"], ["duck down", "polyester"],
              features=["comfort rating 5°C", "compression sack included"]),
            P("trekking poles", (25, 120), ["110-135 cm", "100-130 cm"], ["aluminium", "carbon fibre"],
              features=["sold as a pair", "quick-lock adjustment"]),
            P("cycling helmet", (35, 180), ["S", "M", "L"], ["polycarbonate"],
              features=["integrated rear light", "18 air vents"]),
            P("resistance bands", (10, 35), None, ["latex", "natural rubber", "fabric"],
              features=["set of 5", "5 resistance levels"]),
            P("football", (12, 60), ["4", "5"], ["synthetic leather", "rubber"],
              features=["machine stitched", "FIFA Quality"]),
            P("jump rope", (8, 25), ["3 m", "2.8 m"], ["pvc", "steel cable"],
              features=["ball-bearing handles"]),
        ]),
    "beauty": dict(
        brands=["Glowlab", "Verdance", "Aurelle", "Skinsmith", "Botanica Bay", "Dermaluxe",
                "Maison Eclat"],
        models=[],
        genders=[],
        colours=["ruby red", "nude pink", "berry", "coral", "mauve", "classic red", "plum"],
        features=[],
        contexts=["routine", "self-care routine", "vanity"],
        products=[
            P("face serum", (12, 75), ["15 ml", "30 ml", "50 ml"], None, colours=[],
              features=["with hyaluronic acid", "fragrance-free", "with 10% niacinamide",
                        "dermatologically tested"]),
            P("shampoo", (5, 30), ["250 ml", "500 ml", "1 L"], None, colours=[],
              features=["sulfate-free", "for curly hair", "2-in-1 formula", "vegan formula"]),
            P("hand cream", (5, 25), ["50 ml", "75 ml", "100 ml"], None, colours=[],
              features=["non-greasy", "with shea butter", "cruelty-free"]),
            P("lipstick", (8, 35), None, None, features=["long-lasting", "matte finish", "satin finish", "cruelty-free"]),
            P("nail polish", (5, 18), ["10 ml", "15 ml"], None, features=["chip-resistant", "quick-dry", "vegan formula"]),
            P("makeup brush set", (12, 60), None, ["synthetic fibre", "bamboo"],
              colours=["black", "rose gold", "blush pink"],
              features=["set of 12", "travel pouch included", "cruelty-free"]),
            P("hair brush", (8, 40), None, ["bamboo", "boar bristle", "beech wood"], colours=[],
              features=["detangling", "anti-static"]),
            P("hair dryer", (30, 250), None, None, colours=["black", "white", "rose gold", "blush pink"],
              features=["2000W motor", "3 heat settings", "ionic technology"]),
            P("makeup bag", (10, 45), ["small", "large"], ["vegan leather", "canvas", "nylon"],
              colours=["black", "blush pink", "beige", "sage green"], features=["wipe-clean lining"]),
            P("sunscreen", (8, 35), ["50 ml", "100 ml"], None, colours=[],
              features=["SPF 50", "SPF 30", "water resistant", "dermatologically tested"]),
        ]),
    "toys": dict(
        brands=["Tinkertot", "Playnest", "Bramble Bear", "Wonderworks", "Kiddo Labs", "Toyvana"],
        models=[],
        genders=[],
        colours=["red", "yellow", "blue", "multicolour", "pastel pink", "mint green", "brown"],
        features=["ages 3+", "ages 6+", "CE certified"],
        contexts=["playroom", "playtime", "toy box"],
        products=[
            P("teddy bear", (12, 45), ["30 cm", "40 cm", "60 cm"],
              ["plush", "organic cotton", "recycled polyester"],
              colours=["brown", "cream", "honey brown", "white", "pastel pink"],
              features=["machine washable", "hypoallergenic filling"]),
            P("train set", (20, 80), None, ["beech wood", "solid wood"],
              colours=["multicolour", "red"], features=["35 pieces", "52 pieces"]),
            P("building blocks", (15, 90), None, ["abs plastic", "wood"],
              colours=["multicolour", "pastel pink"], features=["500 pieces", "1,000 pieces"]),
            P("remote control car", (25, 120), ["1:16 scale", "1:24 scale"], ["abs plastic"],
              colours=["red", "blue", "black", "lime green"],
              features=["top speed 30 km/h", "rechargeable battery", "2.4 GHz remote"]),
            P("jigsaw puzzle", (10, 35), ["70x50 cm", "50x40 cm"], ["recycled cardboard", "cardboard"],
              colours=[], features=["1000 pieces", "500 pieces", "ages 12+"]),
            P("kite", (12, 50), ["120 cm", "150 cm"], ["ripstop nylon", "polyester"],
              colours=["multicolour", "red", "blue", "orange"]),
            P("doll house", (50, 200), ["60x30x70 cm", "50x25x60 cm"], ["wood", "plywood"],
              colours=["white", "pastel pink"], features=["includes 15 accessories"]),
            P("plush dinosaur", (10, 35), ["25 cm", "40 cm"], ["recycled polyester", "organic cotton"],
              colours=["green", "mint green", "purple"]),
        ]),
    "jewellery": dict(
        brands=["Lunaria", "Opaline", "Maren Jewels", "Celestine", "Verity Lane", "Aurum & Co"],
        models=[],
        genders=[],
        colours=["rose gold", "gold", "silver", "black"],
        features=["gift box included", "hypoallergenic", "nickel-free"],
        contexts=["look", "jewellery box"],
        products=[
            P("pendant necklace", (15, 250), ["40 cm", "45 cm", "50 cm", "16 inch", "18 inch"],
              ["sterling silver", "stainless steel", "14k gold", "gold-plated brass"],
              mat_colours={"sterling silver": [], "14k gold": [], "gold-plated brass": [],
                           "stainless steel": ["rose gold", "gold", "silver", "black"]},
              features=["adjustable chain"]),
            P("hoop earrings", (12, 180), ["15 mm", "20 mm", "30 mm"],
              ["sterling silver", "stainless steel", "14k gold", "titanium"],
              mat_colours={"sterling silver": [], "14k gold": [],
                           "stainless steel": ["rose gold", "gold", "silver"],
                           "titanium": ["black", "silver"]}),
            P("stud earrings", (10, 120), ["6 mm", "8 mm"], ["sterling silver", "titanium",
                                                            "freshwater pearl"],
              mat_colours={"sterling silver": [], "freshwater pearl": [],
                           "titanium": ["black", "silver", "gold"]}),
            P("bracelet", (10, 150), ["17 cm", "19 cm", "S", "M"],
              ["leather", "sterling silver", "stainless steel"],
              mat_colours={"leather": ["black", "brown", "tan"], "sterling silver": [],
                           "stainless steel": ["rose gold", "gold", "silver"]}),
            P("ring", (15, 200), ["6", "7", "8", "9", "N", "P"],
              ["sterling silver", "titanium", "14k gold", "stainless steel"],
              mat_colours={"sterling silver": [], "14k gold": [], "titanium": ["black", "silver"],
                           "stainless steel": ["rose gold", "gold", "silver", "black"]}),
            P("watch", (50, 400), ["36 mm", "40 mm", "42 mm"], ["stainless steel", "titanium"],
              mat_colours={"stainless steel": ["silver", "gold", "rose gold", "black"],
                           "titanium": ["black", "silver"]},
              features=["5 ATM water resistant", "quartz movement", "2-year warranty"]),
        ]),
    "tools": dict(
        brands=["Torqmax", "Forgeline", "Boltcraft", "Stanwick", "Hexon Tools", "Dynaforge"],
        models=["Pro", "HD", "Max"],
        genders=[],
        colours=["yellow", "orange", "red", "black", "blue", "green"],
        features=["3-year warranty", "professional grade", "lifetime warranty"],
        contexts=["tool kit", "workshop", "garage"],
        products=[
            P("cordless drill", (45, 220), None, None,
              features=["18V battery", "2 batteries included", "13 mm chuck", "21 torque settings"]),
            P("claw hammer", (10, 40), ["16 oz", "20 oz", "450 g"], ["steel", "fibreglass", "hickory"],
              colours=["red", "black", "yellow"], features=["anti-vibration grip"]),
            P("tape measure", (6, 25), ["3 m", "5 m", "8 m"], None, colours=["yellow", "black", "orange"],
              features=["auto-lock", "magnetic hook"]),
            P("adjustable wrench", (10, 40), ["8 inch", "10 inch", "12 inch"],
              ["chrome vanadium steel", "carbon steel", "stainless steel"], colours=[],
              features=["wide jaw opening"]),
            P("screwdriver set", (12, 60), None, ["chrome vanadium steel", "s2 steel"],
              colours=["red", "yellow", "black"], features=["set of 6", "32 bits", "magnetic tips"]),
            P("spirit level", (10, 45), ["40 cm", "60 cm", "100 cm"], ["aluminium"],
              colours=["yellow", "red", "blue"], features=["3 vials", "magnetic base"]),
            P("work gloves", (5, 25), ALPHA_SML, ["leather", "nitrile", "cotton"],
              colours=["grey", "black", "orange"], features=["pack of 3", "touchscreen fingertips"]),
            P("utility knife", (6, 25), None, ["aluminium", "stainless steel"],
              colours=["yellow", "black"], features=["5 spare blades", "quick blade change"]),
            P("toolbox", (15, 90), ["16 inch", "19 inch", "22 inch"], ["steel", "polypropylene"],
              colours=["red", "black", "yellow", "blue"], features=["removable tray"]),
        ]),
    "bags": dict(
        brands=["Wanderly", "Packwell", "Voyaj", "Harbour & Hide", "Roamr", "Cargo Atelier"],
        models=["Metro", "Nomad 2", "Transit"],
        genders=[],
        colours=["black", "navy blue", "olive green", "tan", "cognac brown", "charcoal grey",
                 "sand", "burgundy", "teal", "mustard yellow"],
        features=["lifetime warranty", "water-resistant", "2-year warranty"],
        contexts=["travels", "commute", "weekend trips"],
        products=[
            P("backpack", (30, 160), ["20 L", "25 L", "30 L"],
              ["waxed canvas", "recycled polyester", "nylon", "cotton canvas"],
              features=["padded laptop compartment", "hidden back pocket"]),
            P("carry-on suitcase", (60, 350), ["55x40x20 cm", "55x35x23 cm", "20 inch"],
              ["polycarbonate", "aluminium", "abs plastic"],
              features=["4 spinner wheels", "TSA lock", "expandable"]),
            P("tote bag", (10, 120), None, ["cotton canvas", "leather", "jute", "recycled polyester"],
              features=["inner zip pocket"]),
            P("duffel bag", (40, 220), ["35 L", "40 L", "60 L"], ["waxed canvas", "leather", "nylon"],
              features=["shoe compartment", "detachable shoulder strap"]),
            P("crossbody bag", (25, 200), None, ["leather", "vegan leather", "nylon"],
              features=["adjustable strap", "3 compartments"]),
            P("wallet", (15, 90), None, ["full-grain leather", "leather", "vegan leather", "canvas"],
              features=["RFID blocking", "8 card slots", "coin pocket"]),
            P("laptop backpack", (35, 150), ["14 inch", "15.6 inch", "17 inch"],
              ["nylon", "recycled polyester", "canvas"], features=["USB charging port"]),
            P("toiletry bag", (10, 45), None, ["nylon", "canvas", "vegan leather"],
              features=["hanging hook"]),
        ]),
    "pet": dict(
        brands=["Barkley & Co", "Furrend", "Happy Tails", "Pawtrail", "Purrfect Pals",
                "Muttley Goods"],
        models=[],
        genders=[],
        colours=["red", "black", "navy blue", "grey", "coral", "forest green", "mustard yellow",
                 "sky blue", "brown"],
        features=["vet approved", "30-day returns", "easy to clean"],
        contexts=["pet's day", "furry friend's routine"],
        products=[
            P("dog collar", (8, 40), ALPHA_SML, ["nylon", "leather", "biothane"],
              features=["reflective stitching", "quick-release buckle"]),
            P("dog bed", (25, 150), ["M", "L", "XL", "80x60 cm", "100x70 cm"],
              ["memory foam", "plush", "corduroy"],
              features=["removable washable cover", "non-slip base"]),
            P("cat scratching post", (15, 70), ["60 cm", "80 cm", "90 cm"], ["sisal"],
              colours=["grey", "beige", "cream"], features=["hanging ball toy"]),
            P("dog leash", (8, 40), ["1.5 m", "2 m", "5 m"], ["nylon", "leather", "cotton rope"],
              features=["padded handle"]),
            P("pet bowl", (5, 30), ["250 ml", "500 ml", "1 L"], ["stainless steel", "ceramic", "silicone"],
              features=["non-slip base", "set of 2", "dishwasher safe"]),
            P("dog harness", (12, 50), ["XS", "S", "M", "L", "XL"], ["nylon", "mesh"],
              features=["no-pull design", "reflective strips"]),
            P("cat toy", (3, 15), None, ["felt", "wool"], colours=["grey", "multicolour"],
              features=["pack of 3", "with catnip", "pack of 5"]),
            P("pet carrier", (25, 90), ["S", "M", "L", "45x30x30 cm"], ["nylon", "polypropylene"],
              features=["airline approved", "fits pets up to 8 kg"]),
        ]),
}

CATEGORY_WEIGHTS = {"apparel": 1.3, "shoes": 1.2, "electronics": 1.2, "pet": 0.9}

# Style -> weight.
STYLES = {
    "marketplace": 22, "descriptive": 17, "bullets": 15, "secondhand": 13, "shouty": 8,
    "terse": 10, "spec": 8, "promo": 7,
}

# Words kept in capitals by the title-caser; small words kept lowercase.
SPECIAL_CASE = {"usb-c": "USB-C", "tpu": "TPU", "abs": "ABS", "tpe": "TPE", "pvc": "PVC",
                "tv": "TV", "led": "LED", "s2": "S2", "rfid": "RFID", "tsa": "TSA", "usb": "USB",
                "oeko-tex": "OEKO-TEX", "bpa-free": "BPA-Free", "pfoa-free": "PFOA-Free",
                "ipx7": "IPX7", "fifa": "FIFA", "magsafe": "MagSafe", "ghz": "GHz", "mbps": "Mbps",
                "mah": "mAh", "atm": "ATM", "hd": "HD", "ce": "CE"}
SMALL_WORDS = {"of", "and", "with", "for", "in", "to", "up", "a", "by", "at", "on", "its", "own"}
FABRICS = {"cotton", "organic cotton", "linen", "merino wool", "cashmere", "wool", "silk",
           "viscose", "polyester", "recycled polyester", "egyptian cotton", "turkish cotton",
           "bamboo viscose", "acrylic"}


def tc(s: str) -> str:
    """Title-case a phrase the way shop titles do ("chef's knife" -> "Chef's Knife")."""
    out = []
    for i, w in enumerate(s.split(" ")):
        lw = w.lower()
        if lw in SPECIAL_CASE:
            out.append(SPECIAL_CASE[lw])
        elif i > 0 and lw in SMALL_WORDS:
            out.append(lw)
        elif w[:1].isupper() or not w[:1].isalpha():
            out.append("-".join(p[:1].upper() + p[1:] for p in w.split("-")) if w[:1].isalpha() else w)
        else:
            out.append("-".join(p[:1].upper() + p[1:] for p in w.split("-")))
    return " ".join(out)


PLURALS = {"running shoes", "hiking boots", "sneakers", "sandals", "loafers", "ankle boots",
           "slippers", "jeans", "socks", "chino trousers", "trekking poles", "resistance bands",
           "hoop earrings", "stud earrings", "wireless earbuds", "curtains", "dinner plates",
           "building blocks", "work gloves"}


def verb(product: str, singular: str, plural: str) -> str:
    return plural if product in PLURALS else singular


def cap_first(s: str) -> str:
    return s[:1].upper() + s[1:]


# --------------------------------------------------------------------------------------------
# Sizes and prices
# --------------------------------------------------------------------------------------------

def size_kind(s: str) -> str:
    if re.fullmatch(r"(XXS|XS|S|M|L|XL|XXL|N|P)", s):
        return "code"
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return "number"
    if re.match(r"(EU|UK|US) ", s) or re.fullmatch(r"W\d+ L\d+", s):
        return "code"
    if s in BED:
        return "bed"
    if s == "one size":
        return "one"
    if s in ("small", "large"):
        return "word"
    if re.search(r"\d+x\d+", s):
        return "dim"
    if re.search(r"\d (ml|L)$", s):
        return "vol"
    if re.search(r"\d inch$", s):
        return "inch"
    if "person" in s or "scale" in s:
        return "plain"
    return "length"  # cm, m, mm, oz, g ranges


def size_phrase(rng, s: str, mode: str) -> str:
    """A phrase stating size ``s``; mode: 'title' (shop titles), 'sentence', 'label' (key: value)."""
    k = size_kind(s)
    if mode == "label":
        label = {"dim": ["Dimensions", "Size"], "vol": ["Capacity", "Volume", "Size"],
                 "inch": ["Size", "Fits"]}.get(k, ["Size"])
        return f"{rng.choice(label)}: {s}"
    if k in ("code", "number"):
        if k == "code" and not re.fullmatch(r"[A-Z]{1,3}", s) and rng.random() < 0.5:
            return s  # "EU 42", "W32 L30" read fine on their own
        if mode == "title" and s in ALPHA and rng.random() < 0.25:
            return s
        return rng.choice(["Size", "size"] if mode == "sentence" else ["Size", "Sz"]) + " " + s
    if k == "bed":
        return (tc(s) if mode == "title" else s) + rng.choice([" size", ""])
    if k == "one":
        return tc(s) if mode == "title" else s
    if k == "word":
        return (tc(s) if mode == "title" else s) + " size"
    if mode == "title":
        return s
    if k == "dim":
        return rng.choice([f"measures {s}", s, f"{s} in size"])
    if k == "vol":
        return rng.choice([f"{s} capacity", s])
    if k == "inch":
        return rng.choice([s, f"{s} size"])
    if k == "length":
        return rng.choice([f"measures {s}", s])
    return s


def make_price(rng, lo: int, hi: int, secondhand: bool = False) -> float:
    base = rng.randint(lo, hi)
    if secondhand:
        base = max(2, int(base * rng.uniform(0.35, 0.75)))
        if base >= 20:
            base = int(round(base / 5.0) * 5)
        return float(base)
    r = rng.random()
    if r < 0.45:
        return round(max(base, 1) - 0.01, 2)
    if r < 0.55:
        return round(max(base, 1) - 0.05, 2)
    if r < 0.85:
        return float(base)
    if r < 0.95:
        return base + 0.5
    return round(base + rng.randint(1, 98) / 100, 2)


def num_str(rng, v: float, allow_int: bool = True) -> str:
    integral = v == int(v)
    if v >= 1000 and rng.random() < 0.6:
        return f"{v:,.0f}" if integral and allow_int and rng.random() < 0.5 else f"{v:,.2f}"
    if integral and allow_int and rng.random() < 0.65:
        return str(int(v))
    return f"{v:.2f}"


CURRENCY_FORMS = [("${n}", 30), ("{n} USD", 8), ("USD {n}", 4), ("€{n}", 10), ("EUR {n}", 8),
                  ("{n} EUR", 6), ("{n}€", 3), ("£{n}", 12), ("GBP {n}", 4), ("{n} GBP", 3)]


def money(rng, v: float, currency: str | None = None) -> str:
    fmt = currency or rng.choices([f for f, _ in CURRENCY_FORMS],
                                  [w for _, w in CURRENCY_FORMS])[0]
    return fmt.format(n=num_str(rng, v))


# --------------------------------------------------------------------------------------------
# Row sampling
# --------------------------------------------------------------------------------------------

def sample_attrs(rng, cat: dict, style: str):
    """Pick a product and the canonical attribute values (None = not stated)."""
    complete = rng.random() < P_COMPLETE
    products = cat["products"]
    if complete:
        products = [p for p in products if p["sizes"] and p["materials"]
                    and (p["colours"] is None or p["colours"])]
    p = rng.choice(products)
    material = rng.choice(p["materials"]) if p["materials"] else None
    if material is not None and material in p["mat_colours"]:
        palette = p["mat_colours"][material]
    elif p["colours"] is not None:
        palette = p["colours"]
    else:
        palette = cat["colours"]
    if complete and not palette:  # e.g. sterling silver jewellery: pick a material with colours
        options = [m for m in p["materials"] if p["mat_colours"].get(m, palette or cat["colours"])]
        material = rng.choice(options)
        palette = p["mat_colours"].get(material) or p["colours"] or cat["colours"]
    attrs = {
        "brand": rng.choice(cat["brands"]),
        "product": p["name"],
        "colour": rng.choice(palette) if palette else None,
        "size": rng.choice(p["sizes"]) if p["sizes"] else None,
        "material": material,
        "price": make_price(rng, *p["price"], secondhand=(style == "secondhand")),
    }
    if not complete:
        optional = ["brand", "colour", "size", "material", "price"]
        already = [f for f in optional if attrs[f] is None]
        n_drop = rng.choice([1, 1, 1, 1, 2, 2, 3])
        if already and rng.random() < 0.6:
            n_drop = 0
        weights = {"brand": 1.0, "colour": 1.0, "size": 0.9, "material": 1.2, "price": 1.0}
        candidates = [f for f in optional if attrs[f] is not None]
        for _ in range(min(n_drop, len(candidates))):
            f = rng.choices(candidates, [weights[c] for c in candidates])[0]
            attrs[f] = None
            candidates.remove(f)
        if all(attrs[f] is not None for f in optional):  # guarantee at least one null
            attrs[rng.choice(candidates)] = None
        # ...but keep at least two attributes besides the product.
        while sum(attrs[f] is None for f in optional) > 3:
            dropped = [f for f in optional if attrs[f] is None and f in ("brand", "price")
                       or (f == "colour" and attrs[f] is None and palette)]
            if not dropped:
                return None
            f = rng.choice(dropped)
            attrs[f] = rng.choice(cat["brands"]) if f == "brand" else (
                make_price(rng, *p["price"], secondhand=(style == "secondhand")) if f == "price"
                else rng.choice(palette))
    return p, attrs


# --------------------------------------------------------------------------------------------
# Listing styles. Each takes (rng, ctx) and returns the text; ctx["a"] holds the canonical
# values, ctx also carries gender, model, feature, price phrase pieces.
# --------------------------------------------------------------------------------------------

def _price_tail(rng, ctx, choices):
    if ctx["a"]["price"] is None:
        return ""
    return rng.choice(choices).format(p=ctx["money"])


def st_marketplace(rng, ctx):
    a = ctx["a"]
    head = []
    if a["brand"]:
        head.append(a["brand"])
    if ctx["model"] and rng.random() < 0.4:
        head.append(ctx["model"])
    gender_pos = rng.choice(["head", "tail"]) if ctx["gender"] and rng.random() < 0.6 else None
    if gender_pos == "head":
        head.append(ctx["gender"])
    mat_in_head = a["material"] is not None and rng.random() < 0.5
    if mat_in_head:
        head.append(tc(a["material"]))
    head.append(tc(a["product"]))
    tail = []
    if gender_pos == "tail":
        tail.append(ctx["gender"])
    pair = []
    if a["colour"]:
        pair.append(tc(a["colour"]))
    if a["size"]:
        pair.append(size_phrase(rng, a["size"], "title"))
    if rng.random() < 0.4:
        pair.reverse()
    tail += pair
    if a["material"] and not mat_in_head:
        tail.append(("100% " if a["material"] in FABRICS and rng.random() < 0.3 else "")
                    + tc(a["material"]))
    if ctx["feature"] and rng.random() < 0.7:
        tail.append(tc(ctx["feature"]) if rng.random() < 0.6 else f"({tc(ctx['feature'])})")
    sep = rng.choice([" ", ", ", " - ", " | "])
    text = " ".join(head)
    if tail:
        text += (" " if sep == " " else sep) + sep.join(tail)
    text += _price_tail(rng, ctx, [" - {p}", " | {p}", " {p}", ", {p}", " ({p})"])
    return text


def st_descriptive(rng, ctx):
    a = ctx["a"]
    det = rng.choice([verb(a["product"], "This", "These"), "Our", "The"])
    brand_pre = a["brand"] is not None and rng.random() < 0.5
    col_pre = a["colour"] is not None and rng.random() < 0.5
    mat_pre = a["material"] is not None and rng.random() < 0.35
    subj = [det]
    if brand_pre:
        subj.append(a["brand"])
    if col_pre:
        subj.append(a["colour"])
    if mat_pre:
        subj.append(a["material"])
    subj.append(a["product"])
    if a["brand"] and not brand_pre:
        subj.append(rng.choice(["from", "by"]) + " " + a["brand"])
    preds = []
    if a["material"] and not mat_pre:
        preds.append(verb(a["product"], "is", "are") + " "
                     + rng.choice(["made from", "made of", "crafted from"]) + " "
                     + ("100% " if a["material"] in FABRICS and rng.random() < 0.3 else "")
                     + a["material"])
    if a["colour"] and not col_pre:
        preds.append(rng.choice([verb(a["product"], "comes in", "come in"),
                                 verb(a["product"], "is finished in", "are finished in"),
                                 verb(a["product"], "is available in", "are available in")])
                     + " " + a["colour"])
    if not preds:
        preds.append(verb(a["product"], "is", "are") + " "
                     + rng.choice(["back in stock", "ready to ship", "built for everyday use",
                                   verb(a["product"], "a customer favourite", "customer favourites")]))
    sentences = [" ".join(subj) + " " + " and ".join(preds) + "."]
    extra = []
    if a["size"]:
        k = size_kind(a["size"])
        sp = size_phrase(rng, a["size"], "sentence")
        if k in ("code", "number", "word"):
            extra.append(rng.choice([f"Available in {sp}.", f"{cap_first(sp)}.",
                                     verb(a["product"], "This one is", "This pair is") + f" {sp}."]))
        else:
            extra.append(rng.choice([f"{cap_first(sp)}.", size_phrase(rng, a["size"], "label") + "."]))
    if ctx["feature"]:
        extra.append(cap_first(ctx["feature"]) + ".")
    rng.shuffle(extra)
    sentences += extra
    if a["price"] is not None and ctx["money"].startswith("was "):
        sentences.append(cap_first(ctx["money"]) + ".")
    elif a["price"] is not None:
        sentences.append(rng.choice(["Priced at {p}.", "Yours for {p}.", "Now only {p}.", "{p}.",
                                     "Price: {p}.", "On sale for {p}."]).format(p=ctx["money"]))
    return " ".join(sentences)


def st_bullets(rng, ctx):
    a = ctx["a"]
    labelled = rng.random() < 0.6
    items = []
    brand_item = a["brand"] is not None and labelled and rng.random() < 0.3
    first = ((a["brand"] + " ") if a["brand"] and not brand_item else "") + tc(a["product"])
    if brand_item:
        items.append(f"Brand: {a['brand']}")
    if a["colour"]:
        items.append((rng.choice(["Colour: ", "Color: "]) if labelled else "") + tc(a["colour"]))
    if a["size"]:
        items.append(size_phrase(rng, a["size"], "label" if labelled else "title"))
    if a["material"]:
        m = tc(a["material"])
        if a["material"] in FABRICS and rng.random() < 0.4:
            m = "100% " + m
        items.append(("Material: " if labelled else "") + m)
    if ctx["feature"]:
        items.append(cap_first(ctx["feature"]))
    rng.shuffle(items)
    if a["price"] is not None:
        items.append(("Price: " if labelled and rng.random() < 0.6 else "") + ctx["money"])
    sep = rng.choice([" | ", " - ", " / ", " · "])
    return sep.join([first] + items)


SECONDHAND_OPEN = ["Barely used", "Selling my", "Used twice:", "Like new", "Moving sale:",
                   "Good condition", "Pre-loved", "Lightly used", "For sale:"]
SECONDHAND_OPEN_WORN = ["Hardly worn", "Worn once", "Outgrown"]
SECONDHAND_OPEN_SEALED = ["Unopened", "Sealed, never used", "Brand new, unwanted gift:"]


def st_secondhand(rng, ctx):
    a = ctx["a"]
    opens = list(SECONDHAND_OPEN)
    if ctx["cat"] in ("apparel", "shoes"):
        opens += SECONDHAND_OPEN_WORN
    if ctx["cat"] == "beauty":
        opens = SECONDHAND_OPEN_SEALED + ["Selling my", "For sale:"]
    core = rng.choice(opens) + " " + (a["brand"] + " " if a["brand"] else "") + a["product"]
    details = []
    if a["colour"]:
        details.append(a["colour"])
    if a["material"]:
        details.append(a["material"])
    if a["size"]:
        k = size_kind(a["size"])
        details.append(("size " + a["size"]) if k in ("code", "number") else a["size"])
    rng.shuffle(details)
    if details:
        core += (f" ({', '.join(details)})" if rng.random() < 0.4 else ", " + ", ".join(details))
    parts = [core + "."]
    if ctx["feature"] and rng.random() < 0.5:
        parts.append(cap_first(ctx["feature"]) + ".")
    if rng.random() < 0.4:
        parts.append(rng.choice(["Smoke-free home.", "Pickup only.", "Can post.", "No box.",
                                 "Minor scuffs.", "Works perfectly."]))
    if a["price"] is not None:
        p = ctx["money"]
        if ctx.get("bought_for"):
            parts.append(f"Bought for {ctx['bought_for']}, asking {p}.")
        else:
            parts.append(rng.choice(["Asking {p}.", "{p} ono.", "{p} or best offer.", "Yours for {p}.",
                                     "Asking {p}, collection only.", "Want {p} for it."]).format(p=p))
    else:
        parts.append(rng.choice(["Make me an offer.", "Offers welcome.", "Message for price.",
                                 "Open to offers."]))
    return " ".join(parts)


def st_shouty(rng, ctx):
    a = ctx["a"]
    bits = [rng.choice(["BRAND NEW!!!", "HUGE SALE!!", "LOOK!!", "MUST GO!!", "WOW!!", "NEW IN!!"])]
    name = ((a["brand"] + " ") if a["brand"] else "") + a["product"]
    if ctx["model"] and a["brand"] and rng.random() < 0.3:
        name = a["brand"] + " " + ctx["model"] + " " + a["product"]
    bits.append(name)
    det = []
    if a["colour"]:
        det.append(a["colour"])
    if a["material"]:
        det.append(a["material"])
    if a["size"]:
        det.append(size_phrase(rng, a["size"], "title"))
    rng.shuffle(det)
    bits += det
    if ctx["feature"] and rng.random() < 0.6:
        bits.append(ctx["feature"] + "!")
    if a["price"] is not None:
        if ctx["money"].startswith("was "):
            bits.append(ctx["money"] + "!!!")
        else:
            bits.append(rng.choice(["ONLY {p}!!!", "JUST {p}!!", "{p}!!!", "NOW {p}!!"])
                        .format(p=ctx["money"]))
    bits.append(rng.choice(["FREE SHIPPING!!!", "LIMITED STOCK!!", "BUY NOW!!", "DON'T MISS OUT!!", ""]))
    sep = rng.choice([" ", " - "])
    return sep.join(b for b in bits if b).upper()


def st_terse(rng, ctx):
    a = ctx["a"]
    bits = []
    if a["brand"]:
        bits.append(a["brand"])
    bits.append(a["product"])
    rest = []
    if a["colour"]:
        rest.append(a["colour"])
    if a["material"]:
        rest.append(a["material"])
    if a["size"]:
        k = size_kind(a["size"])
        rest.append((rng.choice(["size ", "sz "]) + a["size"]) if k in ("code", "number") else a["size"])
    rng.shuffle(rest)
    bits += rest
    if a["price"] is not None:
        bits.append(ctx["money"])
    return rng.choice([" ", ", ", " - "]).join(bits)


def st_spec(rng, ctx):
    a = ctx["a"]
    semi = rng.random() < 0.4
    end = "; " if semi else ". "
    fields = []
    if semi:
        fields.append(f"Item: {tc(a['product'])}")
        if a["brand"]:
            fields.append(f"Brand: {a['brand']}")
    else:
        fields.append(tc(a["product"]) + (f" by {a['brand']}" if a["brand"] else ""))
    rest = []
    if a["material"]:
        rest.append("Material: " + ("100% " if a["material"] in FABRICS and rng.random() < 0.3 else "")
                    + tc(a["material"]))
    if a["colour"]:
        rest.append(rng.choice(["Colour", "Color", "Finish"]) + ": " + tc(a["colour"]))
    if a["size"]:
        rest.append(size_phrase(rng, a["size"], "label"))
    if ctx["feature"]:
        rest.append("Features: " + ctx["feature"])
    rng.shuffle(rest)
    fields += rest
    if a["price"] is not None:
        fields.append("Price: " + ctx["money"])
    return end.join(fields) + ("" if semi else ".")


def st_promo(rng, ctx):
    a = ctx["a"]
    ctxw = rng.choice(ctx["contexts"])
    name = ((a["brand"] + " ") if a["brand"] else "") + a["product"]
    s = []
    opener = rng.random()
    if opener < 0.4:
        s.append(f"Meet the {name}" + (f": {ctx['feature']}." if ctx["feature"] else "."))
    elif opener < 0.7:
        s.append(f"Upgrade your {ctxw} with the {name}.")
        if ctx["feature"]:
            s.append(cap_first(ctx["feature"]) + ".")
    else:
        s.append(f"Your {ctxw} deserves the {name}.")
        if ctx["feature"]:
            s.append(cap_first(ctx["feature"]) + ".")
    mc = []
    if a["material"]:
        mc.append(rng.choice(["Crafted from", "Made from", "Built from"]) + " " + a["material"])
    if a["colour"]:
        mc.append(("finished in " if mc else "Finished in ") + a["colour"])
    if mc:
        s.append(", ".join(mc) + ".")
    if a["size"]:
        sp = size_phrase(rng, a["size"], "sentence")
        s.append(f"{cap_first(sp)}." if size_kind(a["size"]) not in ("code", "number") or rng.random() < 0.5
                 else f"Available in {sp}.")
    if a["price"] is not None and ctx["money"].startswith("was "):
        s.append(cap_first(ctx["money"]) + ".")
    elif a["price"] is not None:
        s.append(rng.choice(["Now just {p}.", "Only {p}.", "Yours for {p}.", "Just {p} today."])
                 .format(p=ctx["money"]))
    return " ".join(s)


STYLE_FNS = {
    "marketplace": st_marketplace, "descriptive": st_descriptive, "bullets": st_bullets,
    "secondhand": st_secondhand, "shouty": st_shouty, "terse": st_terse, "spec": st_spec,
    "promo": st_promo,
}


def make_row(rng, cat_name: str):
    cat = CATEGORIES[cat_name]
    style = rng.choices(list(STYLES), list(STYLES.values()))[0]
    sampled = sample_attrs(rng, cat, style)
    if sampled is None:
        return None
    p, a = sampled
    feats = p["features"] + cat["features"]
    ctx = {
        "a": dict(a),
        "cat": cat_name,
        "contexts": cat["contexts"],
        "gender": rng.choice(cat["genders"]) if cat["genders"] and rng.random() < 0.7 else None,
        "model": (rng.choice(cat["models"]) if cat["models"] and a["brand"] and rng.random() < 0.5
                  else None),
        "feature": rng.choice(feats) if feats and rng.random() < 0.6 else None,
        "money": None,
        "bought_for": None,
    }
    if style == "terse" and ctx["a"]["brand"] and rng.random() < 0.25:
        ctx["a"]["brand"] = ctx["a"]["brand"].lower()  # lowercase seller: label as written
    if a["price"] is not None:
        v = a["price"]
        cur = rng.choices([f for f, _ in CURRENCY_FORMS], [w for _, w in CURRENCY_FORMS])[0]
        ctx["money"] = money(rng, v, cur)
        r = rng.random()
        if style in ("descriptive", "promo", "shouty") and r < (0.06 if style == "shouty" else 0.12):
            # Sale price; the label is the current price.
            was = float(int(v * rng.uniform(1.2, 1.6))) + (0.99 if v != int(v) else 0.0)
            ctx["money"] = f"was {money(rng, was, cur)}, now {ctx['money']}"
        elif style == "secondhand" and r < 0.2:
            ctx["bought_for"] = money(rng, float(int(v * rng.uniform(1.6, 2.5))), cur)
        if style in ("descriptive", "secondhand") and rng.random() < 0.1 and not ctx["bought_for"] \
                and not ctx["money"].startswith("was"):
            # Bare amount after a keyword: "only 9.50", "asking 40".
            n = num_str(rng, v)
            ctx["money"] = n
            ctx["bare"] = True
    text = STYLE_FNS[style](rng, ctx)
    if ctx.get("bare"):
        # Make sure the bare number follows a price keyword; otherwise fall back to currency form.
        n = ctx["money"]
        if not re.search(r"(only|asking|price:|for|now)\s+" + re.escape(n) + r"(?![\d])", text, re.I):
            return None
    text = re.sub(r"\s+", " ", text).strip()
    labelled = dict(a)
    labelled["brand"] = ctx["a"]["brand"]
    if style == "shouty" and labelled["brand"]:
        labelled["brand"] = labelled["brand"].upper()
    return {"text": text, "attributes": {f: labelled[f] for f in FIELDS}}, cat_name, style


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

def _vocab():
    brands, colours, materials, sizes, products = set(), set(), set(), set(), set()
    for cat in CATEGORIES.values():
        brands.update(cat["brands"])
        colours.update(cat["colours"])
        for p in cat["products"]:
            products.add(p["name"])
            materials.update(p["materials"] or [])
            colours.update(p["colours"] or [])
            for cs in p["mat_colours"].values():
                colours.update(cs)
            for s in p["sizes"] or []:
                if not re.fullmatch(r"\d+(\.\d+)?", s):  # bare numbers are checked elsewhere
                    sizes.add(s)
    # Generic words that would state an attribute without being in the catalogue.
    colours.update(["green", "blue", "pink", "purple", "orange", "yellow", "red", "brown",
                    "gold", "silver", "grey", "gray", "white", "black", "beige"])
    materials.update(["plastic", "metal", "wood", "steel", "glass", "leather", "cotton", "wool",
                      "rubber", "foam", "nylon", "polyester", "bamboo", "silicone", "ceramic",
                      "canvas", "denim", "linen", "velvet", "oak"])
    return {k: sorted(v, key=len, reverse=True) for k, v in
            dict(brand=brands, colour=colours, material=materials, size=sizes, product=products).items()}


VOCAB = _vocab()


def _term_re(term: str, case_sensitive: bool):
    pat = r"(?<![\w'’.\-:])" + re.escape(term) + r"(?![\w'’]|[\-.:,/]\w)"
    return re.compile(pat, 0 if case_sensitive else re.I)


_TERM_CACHE: dict = {}


def find_term(term: str, text: str) -> bool:
    cs = len(term) == 1  # single-letter sizes (S, M, L, N, P) only count in capitals
    key = (term, cs)
    if key not in _TERM_CACHE:
        _TERM_CACHE[key] = _term_re(term, cs)
    return _TERM_CACHE[key].search(text) is not None


CURRENCY_RE = re.compile(r"[$€£]|\b(USD|EUR|GBP)\b")


def price_forms(v: float) -> list[str]:
    forms = {f"{v:.2f}", f"{v:,.2f}"}
    if v == int(v):
        forms |= {str(int(v)), f"{v:,.0f}"}
    return sorted(forms, key=len, reverse=True)


def check_row(row: dict) -> None:
    text, a = row["text"], row["attributes"]
    assert list(a) == list(FIELDS), a
    assert len(text.split()) <= MAX_WORDS, (len(text.split()), text)
    assert isinstance(a["product"], str) and a["product"] == a["product"].lower()
    for f in ("brand", "product", "colour", "size", "material"):
        v = a[f]
        assert v is None or (isinstance(v, str) and v.strip() == v and v), (f, v)
    for f in ("product", "colour", "material"):
        if a[f] is not None:
            assert a[f] == a[f].lower(), (f, a[f])
    if a["size"] is not None:
        k = size_kind(a["size"])
        if k not in ("code", "number", "vol"):
            assert a["size"] == a["size"].lower(), a["size"]
    lower = text.lower()
    # Every stated value appears in the text (brand with its exact capitalisation).
    if a["brand"] is not None:
        assert a["brand"] in text, (a["brand"], text)
    for f in ("product", "colour", "size", "material"):
        if a[f] is not None:
            assert a[f].lower() in lower, (f, a[f], text)
    # Remove the stated values, then no other term of any field may remain.
    rest = text
    for f in ("brand", "product", "colour", "size", "material"):
        if a[f] is not None:
            rest = _term_re(a[f], False).sub(" ", rest)
    for f in ("brand", "colour", "material", "size", "product"):
        for term in VOCAB[f]:
            assert not find_term(term, rest), (f"stray {f} term {term!r}", a, text)
    # Price.
    if a["price"] is None:
        assert not CURRENCY_RE.search(text), ("money in a null-price listing", text)
        assert not re.search(r"\b(asking|only)\s+\d", text, re.I), text
    else:
        v = a["price"]
        assert isinstance(v, float) and round(v, 2) == v and len(repr(v).split(".")[1]) <= 2, v
        ok = False
        for form in price_forms(v):
            for m in re.finditer(r"(?<![\d.,])" + re.escape(form) + r"(?![\d]|[.,]\d)", text):
                before = text[max(0, m.start() - 8):m.start()]
                after = text[m.end():m.end() + 4]
                if (re.search(r"([$€£]|USD|EUR|GBP)\s?$", before) or re.match(r"\s?([€]|USD|EUR|GBP)", after)
                        or re.search(r"(only|asking|price:|for|now)\s+$", before, re.I)):
                    ok = True
        assert ok, ("price not stated in currency notation", v, text)
    # Bare numbers in size position: a numeric size must be introduced by "size"/"sz".
    if a["size"] is not None and size_kind(a["size"]) == "number":
        assert re.search(r"\b(size|sz):?\s+" + re.escape(a["size"]) + r"(?![\d.]\d)", text, re.I), text


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def build(seed: int = SEED):
    rng = random.Random(seed)
    n_total = N_TRAIN + N_TEST
    # Category schedule proportional to CATEGORY_WEIGHTS, in random order.
    cats = list(CATEGORIES)
    weights = [CATEGORY_WEIGHTS.get(c, 1.0) for c in cats]
    quota = [int(n_total * w / sum(weights)) for w in weights]
    for i in sorted(range(len(cats)), key=lambda i: -weights[i])[: n_total - sum(quota)]:
        quota[i] += 1
    schedule = [c for c, q in zip(cats, quota) for _ in range(q)]
    rng.shuffle(schedule)
    pool, seen = [], set()
    attempts = 0
    for cat_name in schedule:
        while True:
            attempts += 1
            assert attempts < 50 * n_total, "generator keeps failing its checks"
            made = make_row(rng, cat_name)
            if made is None:
                continue
            row, cat, style = made
            if len(row["text"].split()) > MAX_WORDS:
                continue
            key = re.sub(r"\W+", " ", row["text"].lower()).strip()
            if key in seen:
                continue
            check_row(row)
            seen.add(key)
            pool.append((row, cat, style))
            break
    # Shuffle, then split stratified by (has a null, category) so that both splits follow the
    # same distribution: walk the pool in that grouping and send every (420/200)-th row to train.
    rng.shuffle(pool)

    def stratum(i):
        row, cat, _ = pool[i]
        return (any(v is None for v in row["attributes"].values()), cats.index(cat))

    order = sorted(range(n_total), key=stratum)  # stable: shuffled order kept within a stratum
    train_idx = {order[j] for j in range(n_total)
                 if (j + 1) * N_TRAIN // n_total > j * N_TRAIN // n_total}
    train = [pool[i] for i in range(n_total) if i in train_idx]
    test = [pool[i] for i in range(n_total) if i not in train_idx]
    assert len(train) == N_TRAIN and len(test) == N_TEST, (len(train), len(test))
    train_keys = {re.sub(r"\W+", " ", r["text"].lower()).strip() for r, _, _ in train}
    assert not any(re.sub(r"\W+", " ", r["text"].lower()).strip() in train_keys for r, _, _ in test)
    assert len({r["text"] for r, _, _ in train}) == N_TRAIN
    assert len({r["text"] for r, _, _ in test}) == N_TEST
    return train, test


def write_jsonl(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row, _, _ in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def null_rates(rows) -> dict:
    n = len(rows)
    out = {f: sum(r["attributes"][f] is None for r, _, _ in rows) / n for f in FIELDS}
    out["any"] = sum(any(r["attributes"][f] is None for f in FIELDS) for r, _, _ in rows) / n
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    train, test = build(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out_dir / "products_train.jsonl", train)
    write_jsonl(args.out_dir / "products_test.jsonl", test)
    if args.quiet:
        return
    from collections import Counter
    for name, rows in (("train", train), ("test", test)):
        rates = null_rates(rows)
        print(f"{name}: {len(rows)} rows -> {args.out_dir / f'products_{name}.jsonl'}")
        print("  null rate: " + ", ".join(f"{k}={v:.1%}" for k, v in rates.items()))
        print("  categories:", dict(sorted(Counter(c for _, c, _ in rows).items())))
        print("  styles:", dict(sorted(Counter(s for _, _, s in rows).items())))
        words = [len(r["text"].split()) for r, _, _ in rows]
        print(f"  words: min {min(words)}, mean {sum(words) / len(words):.1f}, max {max(words)}")


if __name__ == "__main__":
    main()
