"""The stage page: steer and watch the set from any browser (a phone, a tablet).

    encore live --web                        # http://127.0.0.1:8080/ on this computer
    [web] host = "0.0.0.0", pin = "4711"     # a phone on the same network

- :mod:`engine.web_settings`: the ``[web]`` patch section (outside engine.live, so that
  reading a patch loads no live code);
- :mod:`engine.live.web.frames`: what the page shows, read from the show (pure functions);
- :mod:`engine.live.web.server`: HTTP and a WebSocket (aiohttp) on the show's event loop;
- ``static/``: the page itself (HTML, CSS, JavaScript; every asset ships here, no CDN).
"""

from engine.web_settings import WebSettings

__all__ = ["WebSettings"]
