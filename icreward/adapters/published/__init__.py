"""The published full-size configurations, one module a family; importing this package registers them all
with :func:`icreward.adapters.published_configs.register_published_config`."""

from . import cogvideox, hunyuan_video15, ltx, ltx2, wan

__all__ = ["cogvideox", "hunyuan_video15", "ltx", "ltx2", "wan"]
