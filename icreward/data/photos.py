"""Real photographs that ship offline with scikit-image, cropped into stress-test source images.

The stress-test suite (:mod:`icreward.data.stress_suite`) needs real photographs that are available without a
network connection. scikit-image installs a small set of sample images inside its wheel (the files under
``skimage/data/``); the rest of ``skimage.data`` is fetched with pooch on first use and is deliberately not used
here. Every image used below loads from the installed package.

Eight colour photographs are used. Large ones are split into several *derived sources*: square crops around
different subjects whose reference windows (the central ``1 / CANVAS_FACTOR`` of the crop, see
:mod:`icreward.data.stress_suite`) do not overlap, e.g. the optic disc and the macula of the retina photograph.
Derived sources keep distinct ``source_id`` values but share their ``photo``, and the suite splits by ``photo``
so that no photograph, cropped or not, appears in two splits.

Sources, licences and credits (as documented by ``skimage.data``; scikit-image itself is BSD-3-Clause):

============================  ==========================  =========================================================
source ids                    photo                        licence / credit
============================  ==========================  =========================================================
astronaut_portrait,           ``astronaut()``              public domain; NASA (Eileen Collins), NASA Great Images
astronaut_shuttle
chelsea                       ``chelsea()``                CC0; Stefan van der Walt
coffee                        ``coffee()``                 CC0; Rachel Michetti, courtesy of Pikolo Espresso Bar
rocket                        ``rocket()``                 public domain; SpaceX (DSCOVR launch on Falcon 9)
motorcycle                    ``stereo_motorcycle()[0]``   Middlebury 2014 stereo benchmark (Scharstein et al.,
                                                           GCPR 2014), redistributed by scikit-image; no separate
                                                           licence is stated by the authors
hubble_elliptical,            ``hubble_deep_field()``      public domain; NASA, HubbleSite (eXtreme Deep Field)
hubble_spiral, hubble_pair
ihc_gland, ihc_crypt          ``immunohistochemistry()``   no known copyright restrictions; Center for Microscopy
                                                           And Molecular Imaging (CMMI)
retina_disc, retina_macula    ``retina()``                 CC0 1.0; Mikael Haggstrom, Wikimedia Commons
camera (gray, optional)       ``camera()``                 CC0; Lav Varshney
coins (gray, optional)        ``coins()``                  no known copyright restrictions; Brooklyn Museum
============================  ==========================  =========================================================

The same information is available programmatically in :data:`PHOTO_SOURCES`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    "DEFAULT_SOURCES",
    "PHOTO_SOURCES",
    "PhotoSource",
    "check_sources",
    "load_photo",
    "load_source_image",
]


@dataclass(frozen=True)
class PhotoSource:
    """One stress-test source image: a square crop of a scikit-image sample photograph.

    Attributes:
        source_id: Unique identifier of the source, used in video ids and as a dataset column.
        photo: Name of the scikit-image photograph it is cropped from (``"astronaut"``, ``"retina"``, ...).
            Derived sources of one photograph share it; the stress-test suite splits by it.
        box: ``(top, left, size)`` of the square crop in pixels of the original photograph.
        description: What the crop shows (its centre is the "subject" of the stress-test perturbations).
        license: Licence of the photograph as documented by scikit-image.
        credit: Author / origin of the photograph.
        url: Where scikit-image obtained the photograph, if documented.
        grayscale: Whether the photograph is gray-level (replicated to three channels when loaded).
    """

    source_id: str
    photo: str
    box: tuple[int, int, int]
    description: str
    license: str
    credit: str
    url: str | None = None
    grayscale: bool = False


_NASA_ASTRONAUT = dict(
    license="Public domain",
    credit="NASA (astronaut Eileen Collins), NASA Great Images database",
    url="https://flic.kr/p/r9qvLn",
)
_HUBBLE = dict(
    license="Public domain",
    credit="NASA, Hubble eXtreme Deep Field",
    url="http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
)
_IHC = dict(
    license="No known copyright restrictions",
    credit="Center for Microscopy And Molecular Imaging (CMMI)",
)
_RETINA = dict(
    license="CC0 1.0",
    credit="Mikael Haggstrom (2014), Medical gallery of Mikael Haggstrom, Wikimedia Commons",
    url="https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg",
)

#: All known sources, by ``source_id``. Boxes were chosen by eye so that each crop is centred on its subject.
PHOTO_SOURCES: dict[str, PhotoSource] = {
    source.source_id: source
    for source in (
        PhotoSource("astronaut_portrait", "astronaut", (0, 70, 300), "portrait of an astronaut", **_NASA_ASTRONAUT),
        PhotoSource("astronaut_shuttle", "astronaut", (60, 312, 200), "space shuttle model", **_NASA_ASTRONAUT),
        PhotoSource(
            "chelsea", "chelsea", (0, 100, 300), "face of a tabby cat", license="CC0", credit="Stefan van der Walt"
        ),
        PhotoSource(
            "coffee",
            "coffee",
            (0, 130, 320),
            "espresso cup on a saucer",
            license="CC0",
            credit="Rachel Michetti, courtesy of Pikolo Espresso Bar",
        ),
        PhotoSource(
            "rocket",
            "rocket",
            (93, 155, 334),
            "rocket on the launch pad at dusk",
            license="Public domain",
            credit="SpaceX (DSCOVR launch on Falcon 9)",
            url="https://www.flickr.com/photos/spacexphotos/16511594820/",
        ),
        PhotoSource(
            "motorcycle",
            "motorcycle",
            (40, 160, 460),
            "red motorcycle in a garage",
            license="Middlebury 2014 stereo benchmark, redistributed by scikit-image (no separate licence stated)",
            credit="D. Scharstein et al., High-resolution stereo datasets with subpixel-accurate ground truth, 2014",
            url="http://vision.middlebury.edu/stereo/data/scenes2014/",
        ),
        PhotoSource("hubble_elliptical", "hubble_deep_field", (290, 548, 360), "bright elliptical galaxy", **_HUBBLE),
        PhotoSource("hubble_spiral", "hubble_deep_field", (280, 3, 240), "spiral galaxy", **_HUBBLE),
        PhotoSource("hubble_pair", "hubble_deep_field", (210, 210, 200), "pair of interacting galaxies", **_HUBBLE),
        PhotoSource("ihc_gland", "immunohistochemistry", (290, 208, 220), "round stained colonic gland", **_IHC),
        PhotoSource("ihc_crypt", "immunohistochemistry", (0, 10, 260), "elongated stained colonic crypt", **_IHC),
        PhotoSource("retina_disc", "retina", (436, 10, 420), "optic disc of a fundus photograph", **_RETINA),
        PhotoSource("retina_macula", "retina", (454, 454, 500), "macula of a fundus photograph", **_RETINA),
        PhotoSource(
            "camera",
            "camera",
            (0, 0, 512),
            "photographer with a camera on a tripod",
            license="CC0",
            credit="Lav Varshney",
            grayscale=True,
        ),
        PhotoSource(
            "coins",
            "coins",
            (0, 40, 303),
            "Greek coins from Pompeii",
            license="No known copyright restrictions",
            credit="Brooklyn Museum Collection",
            url="https://www.brooklynmuseum.org/opencollection/archives/image/51611",
            grayscale=True,
        ),
    )
}

#: The colour sources used when no explicit list is given (13 sources cut from 8 photographs).
DEFAULT_SOURCES: tuple[str, ...] = tuple(s.source_id for s in PHOTO_SOURCES.values() if not s.grayscale)

# Only loaders whose file ships inside the scikit-image wheel: the others download through pooch.
_PHOTO_LOADERS = {
    "astronaut": lambda data: data.astronaut(),
    "chelsea": lambda data: data.chelsea(),
    "coffee": lambda data: data.coffee(),
    "rocket": lambda data: data.rocket(),
    "motorcycle": lambda data: data.stereo_motorcycle()[0],
    "hubble_deep_field": lambda data: data.hubble_deep_field(),
    "immunohistochemistry": lambda data: data.immunohistochemistry(),
    "retina": lambda data: data.retina(),
    "camera": lambda data: data.camera(),
    "coins": lambda data: data.coins(),
}


@functools.lru_cache(maxsize=4)
def load_photo(photo: str) -> np.ndarray:
    """Load a whole scikit-image sample photograph as a read-only ``(H, W, 3)`` uint8 array.

    Gray-level photographs are replicated to three channels. Results are cached (the retina photograph takes a
    noticeable time to decode), which is why the returned array is read-only: copy it before modifying it.
    """
    if photo not in _PHOTO_LOADERS:
        raise ValueError(f"Unknown photograph {photo!r}; available: {sorted(_PHOTO_LOADERS)}.")
    from ..extras import require

    data = require("skimage.data", "data", "The stress-test photographs (scikit-image's sample data)")
    image = np.asarray(_PHOTO_LOADERS[photo](data))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = np.ascontiguousarray(image[..., :3], dtype=np.uint8)
    image.flags.writeable = False
    return image


def load_source_image(source_id: str, size: int | None = None) -> np.ndarray:
    """Return the square crop of one source as an ``(S, S, 3)`` uint8 array.

    Args:
        source_id: A key of :data:`PHOTO_SOURCES`.
        size: Side of the returned image in pixels; the crop is resampled with a Lanczos filter (antialiased when
            downscaling). ``None`` returns the crop at its native resolution.
    """
    if source_id not in PHOTO_SOURCES:
        raise ValueError(f"Unknown stress-test source {source_id!r}; available: {sorted(PHOTO_SOURCES)}.")
    source = PHOTO_SOURCES[source_id]
    top, left, side = source.box
    photo = load_photo(source.photo)
    if top + side > photo.shape[0] or left + side > photo.shape[1]:
        raise ValueError(f"Crop box {source.box} of {source_id!r} exceeds the {photo.shape[:2]} photograph.")
    crop = photo[top : top + side, left : left + side]
    if size is None or size == side:
        return crop.copy()
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))


def check_sources(source_ids: Sequence[str]) -> None:
    """Raise ``ValueError`` on unknown or duplicate source ids."""
    unknown = [s for s in source_ids if s not in PHOTO_SOURCES]
    if unknown:
        raise ValueError(f"Unknown stress-test sources {unknown}; available: {sorted(PHOTO_SOURCES)}.")
    if len(set(source_ids)) != len(source_ids):
        raise ValueError(f"Duplicate stress-test sources in {list(source_ids)}.")
